"""The domain and its adapters: settings, policy, models, ledger, clients (no Functions imports)."""
