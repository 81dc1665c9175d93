// Command keymint-extauthz-check is an Envoy ext_authz v3 gRPC client built
// from Envoy's published protos (go-control-plane): the e2e tests ask the
// verifier's Authorization/Check through it, as Envoy would.
//
// It reads one request from standard input as JSON
//
//	{"headers": {"authorization": "Bearer ..."}, "contextExtensions": {"project": "p"}}
//
// sends it as a CheckRequest to -addr, and prints the answer as JSON:
//
//	{"grpcCode": 0, "httpStatus": 0, "headers": {...}, "headersToRemove": [...]}
//
// The key travels on standard input, not on the command line, where any
// process on the machine could read it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

type request struct {
	Headers           map[string]string `json:"headers"`
	ContextExtensions map[string]string `json:"contextExtensions"`
	// RawHeaders are sent in header_map instead of headers, as Envoy does
	// with encode_raw_headers.
	RawHeaders [][2]string `json:"rawHeaders"`
}

type answer struct {
	GrpcCode        int32             `json:"grpcCode"`
	HTTPStatus      int32             `json:"httpStatus"`
	Headers         map[string]string `json:"headers"`
	HeadersToRemove []string          `json:"headersToRemove"`
	Body            string            `json:"body"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9001", "the verifier's gRPC address")
	flag.Parse()
	if err := run(*addr); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(addr string) error {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		return fmt.Errorf("read the request from stdin: %w", err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, checkRequest(req))
	if err != nil {
		return fmt.Errorf("Authorization/Check: %w", err)
	}
	return json.NewEncoder(os.Stdout).Encode(describe(resp))
}

func checkRequest(req request) *authv3.CheckRequest {
	http := &authv3.AttributeContext_HttpRequest{
		Method:  "GET",
		Path:    "/",
		Host:    "upstream.test",
		Headers: req.Headers,
	}
	if len(req.RawHeaders) > 0 {
		raw := &corev3.HeaderMap{}
		for _, h := range req.RawHeaders {
			raw.Headers = append(raw.Headers, &corev3.HeaderValue{Key: h[0], RawValue: []byte(h[1])})
		}
		http.HeaderMap = raw
	}
	return &authv3.CheckRequest{
		Attributes: &authv3.AttributeContext{
			Request:           &authv3.AttributeContext_Request{Http: http},
			ContextExtensions: req.ContextExtensions,
		},
	}
}

func describe(resp *authv3.CheckResponse) answer {
	out := answer{Headers: map[string]string{}, GrpcCode: resp.GetStatus().GetCode()}
	if ok := resp.GetOkResponse(); ok != nil {
		for _, h := range ok.GetHeaders() {
			out.Headers[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		}
		out.HeadersToRemove = ok.GetHeadersToRemove()
	}
	if denied := resp.GetDeniedResponse(); denied != nil {
		out.HTTPStatus = int32(denied.GetStatus().GetCode())
		for _, h := range denied.GetHeaders() {
			out.Headers[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		}
		out.Body = denied.GetBody()
	}
	return out
}
