//! Outbox delivery (placeholder until the outbox work lands).
