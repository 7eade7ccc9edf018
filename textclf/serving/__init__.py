"""The HTTP side: the batcher, the request guard's pieces, the protocol adapters, the page and the OpenAPI document."""
