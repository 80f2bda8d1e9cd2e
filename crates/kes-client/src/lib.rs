//! Typed async KES client with multi-endpoint failover
