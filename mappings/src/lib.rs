//! huitong mappings (being built; see the open issues).
