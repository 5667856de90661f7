"""In-tree backend plugins.  Each registers through the ``halinfer.plugins`` entry
point group exactly as an out-of-tree vendor package would."""
