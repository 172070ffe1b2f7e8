"""absl binaries: thin flag layers over one library call each."""
