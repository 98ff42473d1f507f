// model-runner-peer drives Docker Model Runner's distribution library (github.com/docker/model-runner
// pkg/distribution, pinned in go.mod) the way `docker model package --push` and `docker model pull`
// do, so the tests can check that both sides read each other's artifacts:
//
//	model-runner-peer package --dir DIR --format cncf|docker REF   build from a folder and push
//	model-runner-peer pull --store DIR REF                          pull into a store, print the bundle's model dir
//	model-runner-peer inspect --store DIR REF                       print the pulled model's config as JSON
//
// Registries: Model Runner speaks plain HTTP only to `localhost` and `*.local` hosts
// (pkg/distribution/oci/reference/reference.go, isInsecureHost), so the tests name the
// registry localhost:PORT.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/docker/model-runner/pkg/distribution/builder"
	"github.com/docker/model-runner/pkg/distribution/distribution"
	"github.com/docker/model-runner/pkg/distribution/registry"
)

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: model-runner-peer package|pull|inspect ..."))
	}
	ctx := context.Background()
	var err error
	switch os.Args[1] {
	case "package":
		err = packageAndPush(ctx, os.Args[2:])
	case "pull":
		err = pull(ctx, os.Args[2:])
	case "inspect":
		err = inspect(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "model-runner-peer:", err)
	os.Exit(1)
}

// packageAndPush is `docker model package --safetensors-dir DIR [--format cncf] --push REF`.
func packageAndPush(ctx context.Context, args []string) error {
	flags := flag.NewFlagSet("package", flag.ContinueOnError)
	dir := flags.String("dir", "", "folder of the model (safetensors and its config files)")
	format := flags.String("format", "docker", "docker or cncf")
	if err := flags.Parse(args); err != nil || flags.NArg() != 1 || *dir == "" {
		return fmt.Errorf("usage: package --dir DIR [--format docker|cncf] REF")
	}
	outputFormat := builder.BuildFormatDocker
	if *format == "cncf" {
		outputFormat = builder.BuildFormatCNCF
	}
	pkg, err := builder.FromDirectory(*dir, builder.WithOutputFormat(outputFormat))
	if err != nil {
		return fmt.Errorf("package %s: %w", *dir, err)
	}
	target, err := registry.NewClient(registry.WithUserAgent("model-runner-peer")).NewTarget(flags.Arg(0))
	if err != nil {
		return err
	}
	return pkg.Build(ctx, target, io.Discard)
}

func client(store string) (*distribution.Client, error) {
	return distribution.NewClient(distribution.WithStoreRootPath(store))
}

func storeAndRef(name string, args []string) (string, string, error) {
	flags := flag.NewFlagSet(name, flag.ContinueOnError)
	store := flags.String("store", "", "Model Runner's model store")
	if err := flags.Parse(args); err != nil || flags.NArg() != 1 || *store == "" {
		return "", "", fmt.Errorf("usage: %s --store DIR REF", name)
	}
	return *store, flags.Arg(0), nil
}

// pull is `docker model pull REF`; it prints the folder the runner would serve the model from.
func pull(ctx context.Context, args []string) error {
	store, ref, err := storeAndRef("pull", args)
	if err != nil {
		return err
	}
	c, err := client(store)
	if err != nil {
		return err
	}
	if err := c.PullModel(ctx, ref, io.Discard); err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	bundle, err := c.GetBundle(ref)
	if err != nil {
		return fmt.Errorf("bundle of %s: %w", ref, err)
	}
	fmt.Println(filepath.Join(bundle.RootDir(), "model"))
	return nil
}

// inspect is `docker model inspect REF` of a pulled model: its config as the runner reads it.
func inspect(args []string) error {
	store, ref, err := storeAndRef("inspect", args)
	if err != nil {
		return err
	}
	c, err := client(store)
	if err != nil {
		return err
	}
	model, err := c.GetModel(ref)
	if err != nil {
		return err
	}
	config, err := model.Config()
	if err != nil {
		return err
	}
	id, _ := model.ID()
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"id": id, "format": config.GetFormat(), "architecture": config.GetArchitecture(),
		"parameters": config.GetParameters(), "size": config.GetSize(),
	})
}
