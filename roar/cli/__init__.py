"""The command line: parse, call the library, print. Only this package prints."""
