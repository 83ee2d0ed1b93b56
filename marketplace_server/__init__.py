"""A market of bounded producer shelves and consumer carts, served over gRPC."""
