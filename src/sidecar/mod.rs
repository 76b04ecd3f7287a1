//! The orchestration sidecar (`:3001`): context, results, events and the agent registry.
