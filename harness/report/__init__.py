"""Reports: results.json (and its JSON Schema), the console table, JUnit XML, the Markdown
summary and baselines; ``formats.write_all`` writes a run folder's files."""
