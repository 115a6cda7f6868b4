"""devhost: a small local Azure Functions runtime for this Python app.

It runs the unchanged ``function_app.app`` (HTTP and timer triggers, the Durable client binding and
Durable orchestrations through the SDK's own JSON replay protocol) with state in Table Storage
(Azurite). It exists because Azure Functions Core Tools cannot be installed on machines that cannot
reach Microsoft's CDN. It is a development and test runtime, never deployed: in Azure the real
Functions host and Durable Task extension run the same code.
"""
