// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "Ferry",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "ferry", targets: ["ferry"]),
        .library(name: "FerryCore", targets: ["FerryCore"]),
        .library(name: "FerrySources", targets: ["FerrySources"]),
        .library(name: "FerryNFTables", targets: ["FerryNFTables"]),
        .library(name: "FerryUserspace", targets: ["FerryUserspace"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.0.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.0"),
    ],
    targets: [
        // The pure core: model, manifest decoding, change tracking, endpoint selection, tables.
        .target(
            name: "FerryCore",
            dependencies: [.product(name: "Yams", package: "Yams")]
        ),
        // The C libraries for programming nftables over netlink (Debian: libmnl-dev, libnftnl-dev).
        // Two targets: libnftnl.pc names libmnl only privately, so -lmnl needs its own module.
        .systemLibrary(name: "CMnl", pkgConfig: "libmnl", providers: [.apt(["libmnl-dev"])]),
        .systemLibrary(name: "CNftnl", pkgConfig: "libnftnl", providers: [.apt(["libnftnl-dev"])]),
        // The nftables data plane: ruleset values, planner, diff, renderer (pure), and the netlink
        // writer/reader plus an in-memory twin of the kernel.
        .target(name: "FerryNFTables", dependencies: ["FerryCore", "FerrySystem", "CMnl", "CNftnl"]),
        .systemLibrary(name: "CLinux"),
        // The system layer under both data planes: errno as a typed error, system calls that retry EINTR,
        // and the one netlink socket nftables, conntrack and local routes share.
        .target(name: "FerrySystem", dependencies: ["FerryCore", "CMnl", "CLinux"]),
        // The userspace data plane: epoll event loops relaying TCP with splice, balancers' state,
        // listeners following the tables, and local routes for service addresses (rtnetlink).
        .target(name: "FerryUserspace", dependencies: ["FerryCore", "FerrySystem", "CMnl", "CLinux"]),
        // Where objects come from: manifest files and folders (watched), and the Kubernetes API
        // server (list + watch over HTTPS with AsyncHTTPClient).
        .target(
            name: "FerrySources",
            dependencies: [
                "FerryCore", .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        // A small Kubernetes API server for tests: lists, watches and the failures a real one has.
        .target(
            name: "FerryFakeAPIServer",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        // The node daemon: the sync schedule and loop, the data-plane protocol and its two planes, node
        // addresses, the published status, the health server.
        .target(
            name: "FerryProxy",
            dependencies: [
                "FerryCore", "FerrySystem", "FerrySources", "FerryNFTables", "FerryUserspace", "CLinux",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // The benchmark lab: its test beds' processes, the load-balancing benchmark (`ferry bench`), the
        // sync, manifest-load and API-server harnesses (`ferry bench sync|load|api`), the spread
        // statistics, kube-proxy's ruleset shape for comparison, the report's charts, and the test pods'
        // server and probe (`ferry debug serve|probe`).
        .target(
            name: "FerryBench",
            dependencies: [
                "FerryCore", "FerrySystem", "FerrySources", "FerryNFTables", "FerryUserspace", "FerryProxy", "FerryTestbed",
                "FerryFakeAPIServer", "CLinux", .product(name: "Yams", package: "Yams"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),
        // The commands, as a library so tests can drive them.
        .target(
            name: "FerryCLI",
            dependencies: [
                "FerryCore", "FerrySystem", "FerrySources", "FerryNFTables", "FerryUserspace", "FerryProxy", "FerryTestbed", "FerryFakeAPIServer",
                "FerryBench", "CLinux",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(name: "ferry", dependencies: ["FerryCLI"]),
        // Network-namespace test beds (root): a node, a client and pods wired with veth pairs.
        .target(name: "FerryTestbed", dependencies: ["FerryCore", "CLinux"]),
        .testTarget(name: "FerryCoreTests", dependencies: ["FerryCore"]),
        .testTarget(
            name: "FerryProxyTests", dependencies: ["FerryProxy", "FerryCore", "FerrySystem", "FerrySources", "FerryNFTables", "FerryUserspace"]),
        .testTarget(name: "FerrySourcesTests", dependencies: ["FerrySources", "FerryFakeAPIServer"]),
        .testTarget(name: "FerryUserspaceTests", dependencies: ["FerryUserspace", "FerrySystem", "FerryCore", "FerryBench"]),
        .testTarget(name: "FerryNFTablesTests", dependencies: ["FerryNFTables", "FerryCore"], exclude: ["Golden"]),
        .testTarget(name: "FerryTestbedTests", dependencies: ["FerryTestbed", "FerryCLI", "ferry"]),
        // Real traffic through real rules in network namespaces (root; skipped otherwise, required under CI=true).
        .testTarget(
            name: "FerryIntegrationTests", dependencies: ["FerryTestbed", "FerryNFTables", "FerryCLI", "ferry", "FerryFakeAPIServer"],
            exclude: ["Fixtures"]),
        .testTarget(name: "FerryCLITests", dependencies: ["FerryCLI", "ferry", "FerryFakeAPIServer"], exclude: ["Golden", "Fixtures"]),
        .testTarget(name: "FerryFakeAPIServerTests", dependencies: ["FerryFakeAPIServer"]),
        .testTarget(name: "FerryBenchTests", dependencies: ["FerryBench", "FerryCore"]),
    ]
)
