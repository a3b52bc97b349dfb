"""The paper's Table 1 as one protocol: its rows, the runs that fill them, and the table they make (reproduce.py)."""
