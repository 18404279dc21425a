"""The audit report (HTML + JSON) and the `sdf check` gates."""
