// Package apiservertest applies the chart, the plain manifests and the
// samples to a real Kubernetes API server: kube-apiserver built from the
// pinned k8s.io/kubernetes of deploy/apiserver (once, into the tool cache),
// on Debian's etcd, with Istio 1.7.8's config.istio.io CRDs (testdata) and
// the Prometheus Operator's CRDs, in a namespace that enforces PodSecurity
// restricted. Every object goes through server-side apply with strict
// field validation, as kubectl apply --validate=strict does; the chart is
// installed and upgraded as Helm releases (lookup reads the live server),
// flipping its options.
//
// It is its own package so that `go test ./...` runs it next to the other
// deploy tests.
package apiservertest
