"""crm-analytics: an analytics workbench for customer-relationship data.

The package holds every computation; the notebooks in ``notebooks/`` stay thin
and call into it. See README.md for the data flow and the module map.
"""

__version__ = "0.1.0"
