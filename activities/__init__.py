"""Activity functions: thin bindings that each call one service function with real adapters."""
