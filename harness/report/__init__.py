"""Reports: results.json and the console summary."""
