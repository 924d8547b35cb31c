from cxsync.agent.cli import main

main(prog_name="cxsync")
