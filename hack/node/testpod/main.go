// testpod is the container the node tier (`make test-node`) runs: one static binary, standard
// library only, packed by hack/node/images.sh into a scratch image.
//
//	testpod serve [addr]   HTTP on addr (default :8080): "/" names the pod, "/healthz" is the probe
//	testpod get URL [SECS] GET URL (timeout SECS, default 10), print the body; fails unless 2xx
//	testpod apicheck       call the API server the way an in-cluster client does (the pod's
//	                       projected service-account token and CA, KUBERNETES_SERVICE_HOST/PORT),
//	                       verifying the serving certificate for the ClusterIP and for
//	                       kubernetes.default.svc; prints who the token authenticates as
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: testpod serve [addr] | get URL | apicheck"))
	}
	var err error
	switch os.Args[1] {
	case "serve":
		addr := ":8080"
		if len(os.Args) > 2 {
			addr = os.Args[2]
		}
		err = serve(addr)
	case "get":
		if len(os.Args) < 3 || len(os.Args) > 4 {
			fail(errors.New("usage: testpod get URL [SECS]"))
		}
		timeout := 10 * time.Second
		if len(os.Args) == 4 {
			secs, perr := strconv.Atoi(os.Args[3])
			if perr != nil {
				fail(perr)
			}
			timeout = time.Duration(secs) * time.Second
		}
		err = get(os.Args[2], timeout)
	case "apicheck":
		err = apicheck()
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "testpod:", err)
	os.Exit(1)
}

func serve(addr string) error {
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Printf("request %s %s from %s\n", r.Method, r.URL.Path, r.RemoteAddr)
		fmt.Fprintf(w, "rockchip-llama node test: hello from %s\n", host)
	})
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Printf("testpod %s listening on %s\n", host, ln.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		fmt.Println("testpod: signal received, shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func get(url string, timeout time.Duration) error {
	c := &http.Client{Timeout: timeout}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	os.Stdout.Write(body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// apicheck: GET /api (authenticated discovery), then a SelfSubjectReview (allowed to every
// authenticated user) whose answer names the service account and, for a pod-bound token, the node.
func apicheck() error {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return errors.New("KUBERNETES_SERVICE_HOST/PORT not set")
	}
	token, err := os.ReadFile(saDir + "/token")
	if err != nil {
		return fmt.Errorf("no service-account token: %w", err)
	}
	caPEM, err := os.ReadFile(saDir + "/ca.crt")
	if err != nil {
		return err
	}
	ns, _ := os.ReadFile(saDir + "/namespace")
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return errors.New("ca.crt holds no certificate")
	}
	base := "https://" + net.JoinHostPort(host, port)
	auth := "Bearer " + strings.TrimSpace(string(token))
	// serverName "" verifies the IP SAN (what kube-rs and client-go in-cluster do); the second
	// pass verifies the DNS SAN clients use when they address kubernetes.default.svc.
	var who map[string]any
	for _, serverName := range []string{"", "kubernetes.default.svc"} {
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: serverName},
		}}
		if _, err := call(c, "GET", base+"/api", auth, nil); err != nil {
			return fmt.Errorf("GET /api (server name %q): %w", serverName, err)
		}
		review := []byte(`{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`)
		body, err := call(c, "POST", base+"/apis/authentication.k8s.io/v1/selfsubjectreviews", auth, review)
		if err != nil {
			return fmt.Errorf("SelfSubjectReview (server name %q): %w", serverName, err)
		}
		if err := json.Unmarshal(body, &who); err != nil {
			return err
		}
	}
	status, _ := who["status"].(map[string]any)
	user, _ := status["userInfo"].(map[string]any)
	extra, _ := user["extra"].(map[string]any)
	out, _ := json.Marshal(map[string]any{
		"apiserver": base, "namespace": string(ns), "username": user["username"],
		"nodeName": extra["authentication.kubernetes.io/node-name"],
	})
	fmt.Println(string(out))
	return nil
}

func call(c *http.Client, method, url, auth string, body []byte) ([]byte, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return b, nil
}
