//! huitong connectors (being built; see the open issues).
