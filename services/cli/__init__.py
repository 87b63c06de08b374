"""``mlops``: the operator's command line."""
