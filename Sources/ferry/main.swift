import FerryCLI

await FerryCommand.runMain()
