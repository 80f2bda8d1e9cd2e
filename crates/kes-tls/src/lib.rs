//! rustls configurations, the TLS listener, client identities and API-key certificates
