"""Scraping: the exposition parser (hot path), the series cache, targets and the scrape loop."""
