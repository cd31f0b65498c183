// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "Ferry",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "ferry", targets: ["ferry"]),
        .library(name: "FerryCore", targets: ["FerryCore"]),
        .library(name: "FerrySources", targets: ["FerrySources"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.0.0"),
    ],
    targets: [
        // The pure core: model, manifest decoding, change tracking, endpoint selection, tables.
        .target(
            name: "FerryCore",
            dependencies: [.product(name: "Yams", package: "Yams")]
        ),
        // Where objects come from: manifest files and folders (watched).
        .target(
            name: "FerrySources",
            dependencies: ["FerryCore", .product(name: "Logging", package: "swift-log")]
        ),
        // The commands, as a library so tests can drive them.
        .target(
            name: "FerryCLI",
            dependencies: [
                "FerryCore", "FerrySources",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(name: "ferry", dependencies: ["FerryCLI"]),
        .testTarget(name: "FerryCoreTests", dependencies: ["FerryCore"]),
        .testTarget(name: "FerrySourcesTests", dependencies: ["FerrySources"]),
        .testTarget(name: "FerryCLITests", dependencies: ["FerryCLI", "ferry"], exclude: ["Golden"]),
    ]
)
