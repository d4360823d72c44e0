//! The Slack edge (placeholder until the edge work lands): verification, routes, commands,
//! events, interactions, authorization, audit.
