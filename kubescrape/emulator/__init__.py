"""A kubelet emulator: the secure port with x509/token authentication, RBAC authorization and payloads."""
