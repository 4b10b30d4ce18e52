"""castiel-sync: bidirectional sync between Castiel and tenants' business systems."""
