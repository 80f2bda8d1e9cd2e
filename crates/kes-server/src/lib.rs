//! The KES server: router, auth, errors, metrics, audit, run()
