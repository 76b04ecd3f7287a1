//! Service-manager integration: unit rendering (pure) and systemd/launchd operations.
