import FerryCore
import Foundation
import Testing

@Suite("API responses")
struct APIResponseTests {
    static func decodeList(_ text: String) throws -> APIListPage {
        try Array(text.utf8).withUnsafeBytes { try APIResponseDecoder.listPage($0, source: "api:/api/v1/services") }
    }

    static func decodeEvent(_ text: String) throws -> APIWatchEvent {
        try Array(text.utf8).withUnsafeBytes { try APIResponseDecoder.watchEvent($0, source: "api:/api/v1/services") }
    }

    static let service = #"{"metadata":{"name":"web","namespace":"shop","resourceVersion":"7"},"spec":{"clusterIP":"10.96.0.10","ports":[{"port":80}]}}"#

    @Test func listPageWithItemsWithoutKind() throws {
        let page = try Self.decodeList(
            #"{"kind":"ServiceList","apiVersion":"v1","metadata":{"resourceVersion":"42","continue":"abc"},"items":[\#(Self.service)]}"#)
        #expect(page.resourceVersion == "42")
        #expect(page.continueToken == "abc")
        #expect(page.objects.map(\.key) == [ObjectKey(kind: .service, namespace: "shop", name: "web")])
        #expect(page.errors.isEmpty)
    }

    @Test func emptyContinueIsTheLastPage() throws {
        let page = try Self.decodeList(#"{"kind":"EndpointSliceList","metadata":{"resourceVersion":"1","continue":""},"items":[]}"#)
        #expect(page.continueToken == nil)
        #expect(page.objects.isEmpty)
    }

    @Test func aBadItemIsReportedByNameAndFieldAndTheRestDecodes() throws {
        let bad = #"{"metadata":{"name":"broken","namespace":"shop"},"spec":{"clusterIP":"10.96.0.300","ports":[{"port":80}]}}"#
        let page = try Self.decodeList(#"{"kind":"ServiceList","metadata":{"resourceVersion":"3"},"items":[\#(bad),\#(Self.service)]}"#)
        #expect(page.objects.count == 1)
        #expect(page.rejectedKeys == [ObjectKey(kind: .service, namespace: "shop", name: "broken")])
        let error = try #require(page.errors.first)
        #expect(error.object == "Service shop/broken")
        #expect(error.field == "spec.clusterIP")
    }

    @Test func notAListIsAnError() {
        #expect(throws: APIDecodingError.self) { try Self.decodeList(#"{"kind":"Status","code":500}"#) }
        #expect(throws: APIDecodingError.self) { try Self.decodeList("{") }
    }

    @Test func watchEvents() throws {
        let added = try Self.decodeEvent(#"{"type":"ADDED","object":{"kind":"Service","apiVersion":"v1",\#(Self.service.dropFirst())}"#)
        guard case .upsert(.success(let object), _, "7") = added else { Issue.record("\(added)"); return }
        #expect(object.key.name == "web")

        let deleted = try Self.decodeEvent(
            #"{"type":"DELETED","object":{"kind":"Service","apiVersion":"v1","metadata":{"name":"web","namespace":"shop","resourceVersion":"9"}}}"#)
        guard case .delete(let key, "9") = deleted else { Issue.record("\(deleted)"); return }
        #expect(key == ObjectKey(kind: .service, namespace: "shop", name: "web"))

        let bookmark = try Self.decodeEvent(#"{"type":"BOOKMARK","object":{"kind":"Service","apiVersion":"v1","metadata":{"resourceVersion":"12"}}}"#)
        guard case .bookmark("12") = bookmark else { Issue.record("\(bookmark)"); return }

        let gone = try Self.decodeEvent(
            #"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 5 (12)","reason":"Expired","code":410}}"#
        )
        guard case .status(410, "Expired", let message) = gone else { Issue.record("\(gone)"); return }
        #expect(message.contains("too old"))
    }

    @Test func aRejectedModificationNamesItsKey() throws {
        let event = try Self.decodeEvent(
            #"{"type":"MODIFIED","object":{"kind":"Service","apiVersion":"v1","metadata":{"name":"web","namespace":"shop","resourceVersion":"8"},"spec":{"ports":[{"port":70000}]}}}"#
        )
        guard case .upsert(.failure(let error), let key, "8") = event else { Issue.record("\(event)"); return }
        #expect(key == ObjectKey(kind: .service, namespace: "shop", name: "web"))
        #expect(error.field == "spec.ports[0].port")
    }

    @Test func malformedEventsAreErrors() {
        #expect(throws: APIDecodingError.self) { try Self.decodeEvent(#"{"type":"ADDED"}"#) }
        #expect(throws: APIDecodingError.self) { try Self.decodeEvent(#"{"type":"RENAMED","object":{}}"#) }
        #expect(throws: APIDecodingError.self) { try Self.decodeEvent(#"{"type":"ADDED","object":{"kind":"#) }
    }

    @Test func statusBodies() {
        let status = Array(#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#.utf8)
            .withUnsafeBytes { APIResponseDecoder.status($0) }
        #expect(status == APIStatus(code: 401, reason: "Unauthorized", message: "Unauthorized"))
        #expect(Array("<html>".utf8).withUnsafeBytes { APIResponseDecoder.status($0) } == nil)
    }
}
