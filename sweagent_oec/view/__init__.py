"""`sweagent-oec view`: one self-contained HTML page for a trajectory folder."""
