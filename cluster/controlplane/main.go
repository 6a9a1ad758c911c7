// Command kube-cluster is one multi-call binary holding the processes of a Kubernetes
// cluster, built from one pinned release of the Kubernetes sources (go.mod): the control
// plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) and a node's
// agents (kubelet, kube-proxy).
//
//	kube-cluster etcd [flags]
//	kube-cluster kube-apiserver [flags]
//	kube-cluster kube-controller-manager [flags]
//	kube-cluster kube-scheduler [flags]
//	kube-cluster kubelet [flags]
//	kube-cluster kube-proxy [flags]
//
// It is started by `python -m cluster up` (cluster/local.py), which owns the flags.
// IMDB_CLUSTER_JOB_BACKOFF (a Go duration) shortens the Job controller's retry delay
// after a failed pod (10 s upstream, no flag), so tests do not wait for it.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
	_ "time/tzdata" // CronJob time zones, as upstream's mains import it

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
	"k8s.io/kubernetes/pkg/controller/job"
)

const usage = "usage: kube-cluster etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kube-proxy [flags]"

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if name == "kube-cluster" {
		if len(args) == 0 {
			fmt.Fprintln(os.Stderr, usage)
			os.Exit(2)
		}
		name, args = args[0], args[1:]
	}
	switch name {
	case "etcd":
		etcdmain.Main(append([]string{"etcd"}, args...))
	case "kube-apiserver":
		run(apiserver.NewAPIServerCommand(), args)
	case "kube-controller-manager":
		if d := os.Getenv("IMDB_CLUSTER_JOB_BACKOFF"); d != "" {
			backoff, err := time.ParseDuration(d)
			if err != nil || backoff <= 0 {
				fmt.Fprintf(os.Stderr, "IMDB_CLUSTER_JOB_BACKOFF=%q: not a positive Go duration (e.g. 1s)\n", d)
				os.Exit(2)
			}
			job.DefaultJobPodFailureBackOff = backoff
		}
		run(controllermanager.NewControllerManagerCommand(), args)
	case "kube-scheduler":
		run(scheduler.NewSchedulerCommand(), args)
	case "kubelet":
		run(kubelet.NewKubeletCommand(context.Background()), args)
	case "kube-proxy":
		run(proxy.NewProxyCommand(), args)
	default:
		fmt.Fprintf(os.Stderr, "unknown component %q; %s\n", name, usage)
		os.Exit(2)
	}
}

func run(cmd *cobra.Command, args []string) {
	cmd.SetArgs(args)
	os.Exit(cli.Run(cmd))
}
