"""Vision towers of the vision-language families (written against core ops only)."""
