//! KES YAML configuration with ${ENV} substitution, validated into a typed Config
