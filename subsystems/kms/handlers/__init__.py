"""HTTP endpoints of kms: parse and check the request, call the service, shape the answer."""
