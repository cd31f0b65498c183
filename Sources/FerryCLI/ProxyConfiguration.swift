import FerryCore
import Foundation

/// `ferry run --config FILE`: kube-proxy's `KubeProxyConfiguration` (`kubeproxy.config.k8s.io/v1alpha1`).
///
/// The fields that mean the same in Ferry become the equivalent flags, placed before the command
/// line's own so that a flag given by hand wins (the last occurrence of an option is the one kept).
/// Fields of kube-proxy's schema that Ferry has no use for (iptables, ipvs, winkernel…) are accepted
/// and ignored, so an existing kube-proxy ConfigMap works; a field in neither is an error naming it.
/// Ferry's own settings go in a `ferry:` section.
enum ProxyConfiguration {
    static let apiVersion = "kubeproxy.config.k8s.io/v1alpha1"

    /// A configuration file that cannot be used: the message names the file and the field.
    struct Problem: Error, CustomStringConvertible {
        var description: String
    }

    /// The flags `file` stands for.
    static func flags(fromFile path: String) throws(Problem) -> [String] {
        guard let data = FileManager.default.contents(atPath: path) else { throw Problem(description: "--config: cannot read \(path)") }
        let document: JSONValue
        do {
            document = try JSONValue.parseDocument(data, format: path.hasSuffix(".json") ? .json : .yaml)
        } catch {
            throw Problem(description: "--config \(path): \(error)")
        }
        return try flags(from: document, file: path)
    }

    static func flags(from document: JSONValue, file: String) throws(Problem) -> [String] {
        func fail(_ field: String, _ message: String) -> Problem { Problem(description: "--config \(file): \(field): \(message)") }
        guard case .object(let pairs) = document else { throw Problem(description: "--config \(file): expected a KubeProxyConfiguration mapping") }
        guard case .string(apiVersion)? = document["apiVersion"] else { throw fail("apiVersion", "must be \(apiVersion)") }
        guard case .string("KubeProxyConfiguration")? = document["kind"] else { throw fail("kind", "must be KubeProxyConfiguration") }
        var flags: [String] = []
        func string(_ value: JSONValue, _ field: String) throws(Problem) -> String? {
            switch value {
            case .null: return nil
            case .string(let text): return text.isEmpty ? nil : text
            default: throw fail(field, "must be a string")
            }
        }
        func bool(_ value: JSONValue, _ field: String) throws(Problem) -> Bool {
            guard case .bool(let flag) = value else { throw fail(field, "must be true or false") }
            return flag
        }
        func seconds(_ value: JSONValue, _ field: String) throws(Problem) -> String? {
            guard let text = try string(value, field) else { return nil }
            guard let duration = goDuration(text) else { throw fail(field, "\"\(text)\" is not a duration such as 30s, 1m or 500ms") }
            return String(duration)
        }
        func mapping(_ value: JSONValue, _ field: String, known: Set<String>) throws(Problem) -> [(String, JSONValue)] {
            if case .null = value { return [] }
            guard case .object(let inner) = value else { throw fail(field, "must be a mapping") }
            for (key, _) in inner where !known.contains(key) { throw fail("\(field).\(key)", "is not a field of \(field)") }
            return inner
        }
        for (key, value) in pairs {
            switch key {
            case "apiVersion", "kind": break
            case "mode":
                switch try string(value, key) {
                case nil: break
                case "nftables"?, "userspace"?: flags += ["--mode", try string(value, key)!]
                case let other?: throw fail(key, "\"\(other)\": Ferry programs nftables or relays in userspace (nftables, userspace)")
                }
            case "hostnameOverride": if let name = try string(value, key) { flags += ["--node-name", name] }
            case "bindAddress":
                if let address = try string(value, key), let ip = IPAddress(address), !ip.isUnspecified { flags += ["--node-ip", address] }
            case "healthzBindAddress": if let address = try string(value, key) { flags += ["--healthz-bind-address", address] }
            case "metricsBindAddress": if let address = try string(value, key) { flags += ["--metrics-bind-address", address] }
            case "clusterCIDR": if let cidr = try string(value, key) { flags += ["--cluster-cidr", cidr] }
            case "nodePortAddresses":
                guard case .array(let items) = value else {
                    if case .null = value { break }
                    throw fail(key, "must be a list of CIDRs")
                }
                var cidrs: [String] = []
                for (index, item) in items.enumerated() {
                    guard let text = try string(item, "\(key)[\(index)]") else { continue }
                    if text == "primary", items.count > 1 { throw fail("\(key)[\(index)]", "\"primary\" stands alone: the node's primary addresses") }
                    cidrs.append(text)
                }
                if !cidrs.isEmpty { flags += ["--nodeport-addresses", cidrs.joined(separator: ",")] }
            case "clientConnection":
                for (inner, innerValue) in try mapping(value, key, known: ["kubeconfig", "acceptContentTypes", "contentType", "qps", "burst"])
                where inner == "kubeconfig" {
                    if let path = try string(innerValue, "\(key).\(inner)") { flags += ["--kubeconfig", path] }
                }
            case "conntrack":
                let known: Set<String> = [
                    "maxPerCore", "min", "tcpBeLiberal", "tcpCloseWaitTimeout", "tcpEstablishedTimeout", "udpStreamTimeout", "udpTimeout",
                ]
                for (inner, innerValue) in try mapping(value, key, known: known) {
                    // The TCP and table-size settings are kube-proxy's business with iptables; Ferry sets the UDP ones.
                    switch inner {
                    case "udpTimeout": if let value = try seconds(innerValue, "\(key).\(inner)") { flags += ["--conntrack-udp-timeout", value] }
                    case "udpStreamTimeout":
                        if let value = try seconds(innerValue, "\(key).\(inner)") { flags += ["--conntrack-udp-timeout-stream", value] }
                    default: break
                    }
                }
            case "syncPeriod", "minSyncPeriod":
                if let value = try seconds(value, key) { flags += [key == "syncPeriod" ? "--sync-period" : "--min-sync-period", value] }
            case "nftables":
                for (inner, innerValue) in try mapping(value, key, known: ["masqueradeAll", "masqueradeBit", "syncPeriod", "minSyncPeriod"]) {
                    switch inner {
                    case "masqueradeAll": if try bool(innerValue, "\(key).\(inner)") { flags.append("--masquerade-all") }
                    case "syncPeriod": if let value = try seconds(innerValue, "\(key).\(inner)") { flags += ["--sync-period", value] }
                    case "minSyncPeriod": if let value = try seconds(innerValue, "\(key).\(inner)") { flags += ["--min-sync-period", value] }
                    default: break  // masqueradeBit: Ferry marks with its own bit
                    }
                }
            case "udpIdleTimeout":
                // The legacy userspace mode's field (kube-proxy <= 1.25): Ferry's userspace UDP sessions.
                if let text = try string(value, key) {
                    guard let duration = goDuration(text), duration > 0 else { throw fail(key, "\"\(text)\" is not a duration such as 250ms") }
                    flags += ["--udp-timeout", String(max(1, Int((duration * 1000).rounded())))]
                }
            case "ferry":
                let known = [
                    "userspaceBalancer", "userspaceWorkers", "userspaceIdleTimeout", "userspaceCopy", "userspacePipeSizeKiB", "logFormat", "logLevel",
                    "serviceClusterIPRange", "udpMaxSessions",
                ]
                for (inner, innerValue) in try mapping(value, key, known: Set(known)) {
                    let field = "\(key).\(inner)"
                    switch inner {
                    case "userspaceBalancer": if let text = try string(innerValue, field) { flags += ["--userspace-balancer", text] }
                    case "userspaceWorkers":
                        guard case .int(let count) = innerValue else { throw fail(field, "must be a number") }
                        flags += ["--userspace-workers", String(count)]
                    case "userspaceIdleTimeout": if let value = try seconds(innerValue, field) { flags += ["--userspace-idle-timeout", value] }
                    case "userspaceCopy": if try bool(innerValue, field) { flags.append("--userspace-copy") }
                    case "userspacePipeSizeKiB":
                        guard case .int(let size) = innerValue else { throw fail(field, "must be a number") }
                        flags += ["--userspace-pipe-size", String(size)]
                    case "udpMaxSessions":
                        guard case .int(let count) = innerValue else { throw fail(field, "must be a number") }
                        flags += ["--udp-max-sessions", String(count)]
                    case "logFormat": if let text = try string(innerValue, field) { flags += ["--log-format", text] }
                    case "serviceClusterIPRange": if let text = try string(innerValue, field) { flags += ["--service-cluster-ip-range", text] }
                    default: if let text = try string(innerValue, field) { flags += ["--log-level", text] }
                    }
                }
            case _ where ignoredKubeProxyFields.contains(key):
                break
            default:
                throw fail(key, "is not a field of KubeProxyConfiguration")
            }
        }
        return flags
    }

    /// kube-proxy's fields with no meaning in Ferry, accepted so that its ConfigMaps can be reused.
    static let ignoredKubeProxyFields: Set<String> = [
        "bindAddressHardFail", "configSyncPeriod", "detectLocal", "detectLocalMode", "enableProfiling", "featureGates",
        "iptables", "ipvs", "logging", "oomScoreAdj", "portRange", "showHiddenMetricsForVersion", "winkernel", "windowsRunAsService",
    ]

    /// Seconds in a Go duration (`1m30s`, `500ms`, `2h`), as kube-proxy's configuration writes them.
    static func goDuration(_ text: String) -> Double? {
        var total = 0.0
        var rest = Substring(text)
        guard !rest.isEmpty else { return nil }
        if rest == "0" { return 0 }
        while !rest.isEmpty {
            let number = rest.prefix { $0.isNumber || $0 == "." }
            guard let value = Double(number), !number.isEmpty else { return nil }
            rest = rest.dropFirst(number.count)
            let unit = rest.prefix { $0.isLetter || $0 == "µ" }
            rest = rest.dropFirst(unit.count)
            switch unit {
            case "h": total += value * 3600
            case "m": total += value * 60
            case "s": total += value
            case "ms": total += value / 1000
            case "us", "µs": total += value / 1_000_000
            case "ns": total += value / 1_000_000_000
            default: return nil
            }
        }
        return total
    }

    /// The arguments of `ferry run …` with `--config FILE` replaced by the flags it stands for, placed
    /// first so that the command line's own flags override them.
    static func expand(_ arguments: [String]) throws(Problem) -> [String] {
        guard arguments.first == "run" else { return arguments }
        // kube-proxy's `-v=4` / `-v 4` (pflag reads a single dash as a long name): `--v`.
        let arguments = arguments.map { $0.hasPrefix("-v=") ? "-" + $0 : $0 == "-v" ? "--v" : $0 }
        var rest: [String] = []
        var file: String?
        var index = 1
        while index < arguments.count {
            let argument = arguments[index]
            if argument == "--config" {
                guard index + 1 < arguments.count else { throw Problem(description: "--config needs a file") }
                file = arguments[index + 1]
                index += 2
                continue
            }
            if argument.hasPrefix("--config=") {
                file = String(argument.dropFirst("--config=".count))
            } else {
                rest.append(argument)
            }
            index += 1
        }
        guard let file else { return arguments }
        return ["run"] + (try flags(fromFile: file)) + rest
    }

    /// The effective configuration of a parsed `run`, as a KubeProxyConfiguration (`--write-config-to`).
    static func render(_ run: RunCommand) -> String {
        func duration(_ seconds: Double) -> String {
            seconds == seconds.rounded() ? "\(Int(seconds))s" : "\(Int((seconds * 1000).rounded()))ms"
        }
        var lines = [
            "apiVersion: \(apiVersion)", "kind: KubeProxyConfiguration", "mode: \(run.mode.rawValue)",
            "hostnameOverride: \(jsonQuoted(run.node.nodeName ?? ""))",
            "bindAddress: \(jsonQuoted(run.node.nodeIPs.first ?? "0.0.0.0"))",
            "healthzBindAddress: \(jsonQuoted(run.healthzBindAddress))", "metricsBindAddress: \(jsonQuoted(run.metricsBindAddress))",
            "clusterCIDR: \(jsonQuoted(run.node.clusterCIDR ?? ""))",
        ]
        let ports = run.nftables.nodePortAddresses?.split(separator: ",").map { jsonQuoted(String($0)) } ?? []
        lines.append("nodePortAddresses: [\(ports.joined(separator: ", "))]")
        lines += ["clientConnection:", "  kubeconfig: \(jsonQuoted(run.source.kubeconfig ?? ""))"]
        lines += [
            "conntrack:", "  udpTimeout: \(duration(run.conntrackUDPTimeout))", "  udpStreamTimeout: \(duration(run.conntrackUDPStreamTimeout))",
        ]
        lines.append("udpIdleTimeout: \(duration(Double(run.userspace.udpTimeoutMilliseconds) / 1000))")
        lines += [
            "nftables:", "  masqueradeAll: \(run.nftables.masqueradeAll)", "  syncPeriod: \(duration(run.syncPeriod))",
            "  minSyncPeriod: \(duration(run.minSyncPeriod))",
        ]
        lines += [
            "ferry:", "  userspaceBalancer: \(run.userspace.balancer)",
            "  userspaceIdleTimeout: \(duration(run.userspace.idleTimeout))", "  userspaceCopy: \(run.userspace.copy)",
            "  userspacePipeSizeKiB: \(run.userspace.pipeKiB)", "  logFormat: \(run.logFormat)", "  logLevel: \(run.logLevel)",
            "  serviceClusterIPRange: \(jsonQuoted(run.source.serviceClusterIPRange ?? ""))", "  udpMaxSessions: \(run.userspace.udpMaxSessions)",
        ]
        if let workers = run.userspace.workers { lines.append("  userspaceWorkers: \(workers)") }
        return lines.joined(separator: "\n") + "\n"
    }
}
