"""The pieces of ``scripts/opensearch_node.py``: errors and constants (`common`), the
distribution and the JDK (`distribution`), processes, ports and HTTP (`processes`), and
the secured node's certificates and security configuration (`security`)."""
