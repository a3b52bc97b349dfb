"""The paper's Table 1 as one protocol, `python -m timm_fct.table1` (protocol.py): its rows and their configs
(rows.py), the training runs that fill them, and the table, JSON and figure they make (table.py)."""
