from labvault.cli.app import run

run()
