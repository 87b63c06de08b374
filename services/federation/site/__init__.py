"""The site agent: Flower's SuperNode and the federation's ClientApp, next to a site's data."""
