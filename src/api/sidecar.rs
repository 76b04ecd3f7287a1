//! Wire types of the sidecar's HTTP contract.
