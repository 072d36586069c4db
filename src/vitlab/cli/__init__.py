"""The `vitlab` command: one small module per subcommand, parsing and printing only."""
