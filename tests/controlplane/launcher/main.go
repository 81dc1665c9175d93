// Command keymint-controlplane runs a real, minimal Kubernetes control plane on
// loopback for keymint's tests, demo and local development: an embedded etcd,
// upstream kube-apiserver and kube-controller-manager (garbage collection and
// namespace deletion).
//
// It generates its own certificates (no network), picks free ports, waits until
// the API server is ready, writes an admin kubeconfig atomically and prints
// "ready <kubeconfig>" on stdout. It stops everything it started on SIGINT or
// SIGTERM and, with --watch-stdin, when its standard input closes: a test
// process that holds the pipe cannot leave orphans behind, whether it exits,
// panics or is killed.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

const stdinClosed = "stdin closed"

// writeAuditPolicy records every mutating request at Metadata level (never
// bodies, so no Secret data) once the response is known.
const writeAuditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted"]
rules:
- level: Metadata
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
- level: None
`

func main() {
	dir := flag.String("dir", "", "state directory (certificates, etcd data, logs, kubeconfig)")
	bin := flag.String("bin", "", "directory holding kube-apiserver and kube-controller-manager (default: next to this binary)")
	watchStdin := flag.Bool("watch-stdin", false, "shut down when standard input closes")
	ephemeral := flag.Bool("ephemeral", false, "remove the state directory on shutdown")
	noControllerManager := flag.Bool("no-controller-manager", false, "do not start kube-controller-manager")
	flag.Parse()
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	log.SetPrefix("controlplane: ")

	if *dir == "" {
		log.Fatal("--dir is required")
	}
	if *bin == "" {
		self, err := os.Executable()
		if err != nil {
			log.Fatalf("locating own binary: %v", err)
		}
		*bin = filepath.Dir(self)
	}
	stateDir, err := filepath.Abs(*dir)
	if err != nil {
		log.Fatalf("state directory: %v", err)
	}

	// Children get SIGKILL if this process dies without cleaning up. Pdeathsig
	// fires when the *thread* that forked exits, so all forks happen on this
	// locked main thread, which lives as long as the process.
	runtime.LockOSThread()

	cp := &controlPlane{dir: stateDir, bin: *bin}
	stop := make(chan string, 3)
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	go func() { stop <- (<-signals).String() }()
	if *watchStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			stop <- stdinClosed
		}()
	}

	kubeconfig, err := cp.start(!*noControllerManager, stop)
	if err != nil {
		cp.shutdown(false)
		log.Fatalf("start: %v", err)
	}
	fmt.Printf("ready %s\n", kubeconfig)
	log.Printf("ready: KUBECONFIG=%s (logs in %s)", kubeconfig, filepath.Join(stateDir, "logs"))

	var why string
	select {
	case why = <-stop:
	case why = <-cp.exited:
	}
	log.Printf("shutting down: %s", why)
	// A test run that ended (its pipe closed) wants nothing preserved and no
	// process lingering after it returns: kill at once. A signal from a
	// person (make cluster-down, Ctrl-C) gets a graceful stop.
	cp.shutdown(why != stdinClosed)
	if *ephemeral {
		_ = os.RemoveAll(stateDir)
	}
}

type child struct {
	cmd  *exec.Cmd
	done chan struct{}
}

type controlPlane struct {
	dir      string
	bin      string
	etcd     *embed.Etcd
	children []child
	exited   chan string
}

func (cp *controlPlane) start(withControllerManager bool, stop <-chan string) (string, error) {
	cp.exited = make(chan string, 4)
	_ = os.Remove(filepath.Join(cp.dir, "kubeconfig"))
	for _, sub := range []string{"pki", "logs", "etcd"} {
		if err := os.MkdirAll(filepath.Join(cp.dir, sub), 0o700); err != nil {
			return "", err
		}
	}
	pki, err := writePKI(filepath.Join(cp.dir, "pki"))
	if err != nil {
		return "", fmt.Errorf("certificates: %w", err)
	}
	ports, err := freePorts(3)
	if err != nil {
		return "", fmt.Errorf("ports: %w", err)
	}
	etcdClient, etcdPeer, apiPort := ports[0], ports[1], ports[2]

	if err := cp.startEtcd(etcdClient, etcdPeer); err != nil {
		return "", fmt.Errorf("etcd: %w", err)
	}

	auditPolicy := filepath.Join(cp.dir, "audit-policy.yaml")
	if err := os.WriteFile(auditPolicy, []byte(writeAuditPolicy), 0o600); err != nil {
		return "", err
	}

	server := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	apiArgs := []string{
		"--etcd-servers=" + fmt.Sprintf("http://127.0.0.1:%d", etcdClient),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", apiPort),
		"--cert-dir=" + filepath.Join(cp.dir, "pki"),
		"--tls-cert-file=" + pki.servingCert,
		"--tls-private-key-file=" + pki.servingKey,
		"--client-ca-file=" + pki.caCert,
		"--authorization-mode=RBAC",
		"--service-account-key-file=" + pki.saKey,
		"--service-account-signing-key-file=" + pki.saKey,
		"--service-account-issuer=https://kubernetes.default.svc",
		// The service range is only configuration: nothing here routes to it.
		"--service-cluster-ip-range=10.96.0.0/24",
		// Without endpoints reconciliation the API server does not try to
		// publish itself into the kubernetes Service every 10 s and fail.
		"--endpoint-reconciler-type=none",
		"--enable-priority-and-fairness=false",
		// Every write, with who made it (user agent) and where: tests count
		// an operator's writes in their own namespace from this log.
		"--audit-policy-file=" + auditPolicy,
		"--audit-log-path=" + filepath.Join(cp.dir, "logs", "audit.log"),
		"--audit-log-format=json",
		"--audit-log-mode=blocking",
		"--audit-log-maxsize=0",
		"--profiling=false",
	}
	if err := cp.spawn("kube-apiserver", apiArgs); err != nil {
		return "", err
	}

	if err := waitReady(server, pki, stop, cp.exited); err != nil {
		return "", err
	}
	// The kubeconfig is written only once the API server is ready, and
	// atomically: its presence means "ready" to `make cluster-up`.
	kubeconfig := filepath.Join(cp.dir, "kubeconfig")
	if err := writeKubeconfig(kubeconfig, server, pki); err != nil {
		return "", err
	}

	if withControllerManager {
		kcmArgs := []string{
			"--kubeconfig=" + kubeconfig,
			// The built-in edit, admin and view ClusterRoles are aggregated
			// roles, empty until this controller fills them; the attack tests
			// bind tenants to the real `edit`.
			"--controllers=garbage-collector-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller,clusterrole-aggregation-controller",
			"--use-service-account-credentials=true",
			"--service-account-private-key-file=" + pki.saKey,
			"--root-ca-file=" + pki.caCert,
			"--leader-elect=false",
			"--secure-port=0",
			"--profiling=false",
		}
		if err := cp.spawn("kube-controller-manager", kcmArgs); err != nil {
			return "", err
		}
	}
	return kubeconfig, nil
}

func (cp *controlPlane) startEtcd(clientPort, peerPort int) error {
	cfg := embed.NewConfig()
	cfg.Name = "keymint-test"
	cfg.Dir = filepath.Join(cp.dir, "etcd")
	clientURL, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", clientPort))
	peerURL, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", peerPort))
	cfg.ListenClientUrls = []url.URL{*clientURL}
	cfg.AdvertiseClientUrls = []url.URL{*clientURL}
	cfg.ListenPeerUrls = []url.URL{*peerURL}
	cfg.AdvertisePeerUrls = []url.URL{*peerURL}
	cfg.InitialCluster = fmt.Sprintf("%s=%s", cfg.Name, peerURL.String())
	// A throwaway test store: durability across power loss buys nothing and
	// fsync dominates write latency on small machines.
	cfg.UnsafeNoFsync = true
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(cp.dir, "logs", "etcd.log")}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return err
	}
	cp.etcd = e
	select {
	case <-e.Server.ReadyNotify():
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("not ready after 30s")
	}
}

func (cp *controlPlane) spawn(name string, args []string) error {
	logFile, err := os.Create(filepath.Join(cp.dir, "logs", name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(cp.bin, name), args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	c := child{cmd: cmd, done: make(chan struct{})}
	cp.children = append(cp.children, c)
	go func() {
		err := cmd.Wait()
		close(c.done)
		select {
		case cp.exited <- fmt.Sprintf("%s exited (%v); see %s", name, err, logFile.Name()):
		default:
		}
	}()
	return nil
}

// shutdown stops the children in reverse order (controller manager, then API
// server), then etcd.
func (cp *controlPlane) shutdown(graceful bool) {
	for i := len(cp.children) - 1; i >= 0; i-- {
		c := cp.children[i]
		if !graceful {
			_ = c.cmd.Process.Kill()
			<-c.done
			continue
		}
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
	if cp.etcd != nil {
		cp.etcd.Close()
	}
}

func freePorts(n int) ([]int, error) {
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// waitReady polls /readyz with the admin certificate: the API server answers
// 2-3 s after start, and a fixed sleep would be either too short or wasteful.
func waitReady(server string, pki *pkiFiles, stop <-chan string, exited <-chan string) error {
	cert, err := tls.LoadX509KeyPair(pki.adminCert, pki.adminKey)
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(pki.caCert)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for {
		resp, err := client.Get(server + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case why := <-stop:
			return fmt.Errorf("interrupted: %s", why)
		case why := <-exited:
			return fmt.Errorf("%s", why)
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready after 90s")
		case <-time.After(100 * time.Millisecond):
		}
	}
}
