import ArgumentParser
import FerryBench
import FerryCore
import Foundation

/// `ferry bench load`: what reading manifests at cluster scale costs, from the parse to a listing.
struct LoadBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load",
        abstract: "Time reading N Services + N EndpointSlices (JSON and YAML): parsers, read+validate, tables, ferry get, one edit.",
        discussion: """
            For each size and format the generated manifests go to a folder of files of at most 10,000 Services \
            each (the manifest file limit is 64 MiB). Figures are medians of --repeats runs, with their spread \
            (min-max). "get -A" runs `ferry get services -A --manifests FOLDER` as a child process: wall time \
            and peak RSS. "edit" is the reload after changing one small file beside the others, as the watcher \
            runs it once inotify names the file; the same is measured among N files of one Service each, with \
            a poll's reload (a walk of the folder) beside it. The parser table compares Ferry's parsers with what a Swift user would pick on the first \
            file: Foundation's JSONSerialization and JSONDecoder (into Codable mirrors, no validation), and \
            Yams composing nodes.
            """)

    @Option(help: "Comma-separated numbers of Services (each with one EndpointSlice).")
    var sizes: String = "10000,50000"

    @Option(help: "Endpoints per EndpointSlice.")
    var endpoints: Int = 10

    @Option(help: "Repetitions of each measurement; the median is reported.")
    var repeats: Int = 3

    @Option(help: ArgumentHelp("Keep the generated manifests in this folder.", valueName: "dir"))
    var keep: String?

    @Flag(help: "Print the figures as JSON.")
    var json = false

    var parsedSizes: [Int] { sizes.split(separator: ",").compactMap { Int($0) } }

    func validate() throws {
        guard !parsedSizes.isEmpty, parsedSizes.allSatisfy({ (1...200_000).contains($0) }) else {
            throw ValidationError("--sizes must list numbers 1-200000")
        }
        guard (1...1000).contains(endpoints) else { throw ValidationError("--endpoints must be 1-1000") }
        guard (1...20).contains(repeats) else { throw ValidationError("--repeats must be 1-20") }
    }

    func run() async throws {
        let quiet = json
        let benchmark = ManifestLoadBenchmark(
            sizes: parsedSizes, endpoints: endpoints, repeats: repeats, keep: keep, ferryPath: BenchProcesses.ferryPath,
            progress: { line in if !quiet { FileHandle.standardError.write(Data((line + "\n").utf8)) } })
        let results = try benchmark.run()
        if json {
            try printJSON(results)
            return
        }
        print(benchmark.report(results), terminator: "")
    }
}
