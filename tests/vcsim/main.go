// Command vcsim starts a simulated vCenter (govmomi's simulator.VPX model) for the tests and the lab.
//
// Debian's golang-github-vmware-govmomi-dev ships the simulator library but not the vcsim command, so
// the project keeps this small main. Beyond what the library does, it:
//   - places every datastore under -dir, so the datastores are real directories the tests can reach,
//   - gives every VM disk a real, sparse flat file of -disk-mb MiB and a text VMDK descriptor,
//   - implements ExtensionManager Register/Find/Unregister/UpdateExtension (missing in govmomi 0.24),
//     so that vSphere client plugin registration can be tested,
//   - with -tls, serves https with a self-signed certificate (as a real vCenter does), or the one given by
//     -tls-cert/-tls-key, so that pinning vCenter's certificate by its SHA-256 fingerprint, and trusting
//     it through a CA bundle, can be tested.
//
// On start it prints one JSON line to stdout: {"url": ..., "datastores": {name: directory}} and then
// serves until SIGINT or SIGTERM.
package main

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// ExtensionManager adds the registration methods that govmomi 0.24's simulator lacks.
type ExtensionManager struct {
	mo.ExtensionManager
}

func (m *ExtensionManager) find(key string) int {
	for i, e := range m.ExtensionList {
		if e.Key == key {
			return i
		}
	}
	return -1
}

func (m *ExtensionManager) publish() {
	simulator.Map.Update(m, []types.PropertyChange{{Name: "extensionList", Val: m.ExtensionList}})
}

func (m *ExtensionManager) RegisterExtension(req *types.RegisterExtension) soap.HasFault {
	body := &methods.RegisterExtensionBody{}
	if req.Extension.Key == "" {
		body.Fault_ = simulator.Fault("extension key is empty", &types.InvalidArgument{InvalidProperty: "extension.key"})
		return body
	}
	if m.find(req.Extension.Key) >= 0 {
		body.Fault_ = simulator.Fault("extension already registered", &types.InvalidArgument{InvalidProperty: "extension.key"})
		return body
	}
	m.ExtensionList = append(m.ExtensionList, req.Extension)
	m.publish()
	body.Res = &types.RegisterExtensionResponse{}
	return body
}

func (m *ExtensionManager) FindExtension(req *types.FindExtension) soap.HasFault {
	body := &methods.FindExtensionBody{Res: &types.FindExtensionResponse{}}
	if i := m.find(req.ExtensionKey); i >= 0 {
		ext := m.ExtensionList[i]
		body.Res.Returnval = &ext
	}
	return body
}

func (m *ExtensionManager) UnregisterExtension(req *types.UnregisterExtension) soap.HasFault {
	body := &methods.UnregisterExtensionBody{}
	i := m.find(req.ExtensionKey)
	if i < 0 {
		body.Fault_ = simulator.Fault("extension not registered", &types.NotFound{})
		return body
	}
	m.ExtensionList = append(m.ExtensionList[:i], m.ExtensionList[i+1:]...)
	m.publish()
	body.Res = &types.UnregisterExtensionResponse{}
	return body
}

func (m *ExtensionManager) UpdateExtension(req *types.UpdateExtension) soap.HasFault {
	body := &methods.UpdateExtensionBody{}
	i := m.find(req.Extension.Key)
	if i < 0 {
		body.Fault_ = simulator.Fault("extension not registered", &types.NotFound{})
		return body
	}
	m.ExtensionList[i] = req.Extension
	m.publish()
	body.Res = &types.UpdateExtensionResponse{}
	return body
}

// datastoreDirs maps each datastore name to its local directory.
func datastoreDirs() map[string]string {
	dirs := map[string]string{}
	for _, e := range simulator.Map.All("Datastore") {
		ds := e.(*simulator.Datastore)
		if info, ok := ds.Info.(*types.LocalDatastoreInfo); ok {
			dirs[ds.Name] = info.Path
		}
	}
	return dirs
}

// sizeDisks gives every VM disk a sparse flat file of the given size and a VMDK descriptor naming it.
func sizeDisks(diskMB int64) error {
	dirs := datastoreDirs()
	for _, e := range simulator.Map.All("VirtualMachine") {
		vm := e.(*simulator.VirtualMachine)
		for _, dev := range vm.Config.Hardware.Device {
			disk, ok := dev.(*types.VirtualDisk)
			if !ok {
				continue
			}
			backing, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
			if !ok {
				continue
			}
			var p struct{ ds, rel string }
			name := backing.FileName
			if strings.HasPrefix(name, "[") {
				end := strings.Index(name, "]")
				p.ds = name[1:end]
				p.rel = strings.TrimSpace(name[end+1:])
			}
			base, ok := dirs[p.ds]
			if !ok {
				return fmt.Errorf("disk %q: datastore %q has no local directory", name, p.ds)
			}
			descriptor := filepath.Join(base, p.rel)
			flat := strings.TrimSuffix(descriptor, ".vmdk") + "-flat.vmdk"
			if err := os.MkdirAll(filepath.Dir(flat), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(flat, os.O_CREATE|os.O_RDWR, 0o644)
			if err != nil {
				return err
			}
			size := diskMB * 1024 * 1024
			if err := f.Truncate(size); err != nil {
				f.Close()
				return err
			}
			f.Close()
			sectors := size / 512
			desc := fmt.Sprintf("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"+
				"createType=\"vmfs\"\n\n# Extent description\nRW %d VMFS \"%s\"\n\n"+
				"# The Disk Data Base\n#DDB\nddb.adapterType = \"lsilogic\"\nddb.virtualHWVersion = \"13\"\n",
				sectors, filepath.Base(flat))
			if err := os.WriteFile(descriptor, []byte(desc), 0o644); err != nil {
				return err
			}
			disk.CapacityInKB = diskMB * 1024
			disk.CapacityInBytes = size
		}
	}
	return nil
}

func newUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (host:port, port 0 picks a free one)")
	dc := flag.Int("dc", 1, "number of datacenters")
	cluster := flag.Int("cluster", 1, "number of clusters per datacenter")
	host := flag.Int("host", 3, "number of hosts per cluster")
	standalone := flag.Int("standalone-host", 0, "number of standalone hosts per datacenter")
	vm := flag.Int("vm", 2, "number of VMs per resource pool (per cluster and per standalone host)")
	ds := flag.Int("ds", 1, "number of datastores (each a directory under -dir)")
	pg := flag.Int("pg", 1, "number of distributed port groups per datacenter")
	diskMB := flag.Int64("disk-mb", 64, "size of every VM disk in MiB (sparse flat file)")
	dir := flag.String("dir", "", "directory under which the datastores are created (default: $TMPDIR)")
	username := flag.String("username", "administrator@vsphere.local", "login user name")
	password := flag.String("password", "", "login password (empty: any non-empty user and password)")
	autostart := flag.Bool("autostart", true, "power on the VMs the model creates")
	useTLS := flag.Bool("tls", false, "serve https with a self-signed certificate instead of http")
	tlsCert := flag.String("tls-cert", "", "with -tls: serve this PEM certificate (chain) instead")
	tlsKey := flag.String("tls-key", "", "with -tls: the PEM private key of -tls-cert")
	flag.Parse()

	if *dir != "" {
		if err := os.MkdirAll(*dir, 0o755); err != nil {
			fmt.Fprintf(os.Stderr, "vcsim: cannot create -dir %s: %v\n", *dir, err)
			os.Exit(2)
		}
		os.Setenv("TMPDIR", *dir)
	}

	model := simulator.VPX()
	model.Datacenter = *dc
	model.Cluster = *cluster
	model.ClusterHost = *host
	model.Host = *standalone
	model.Machine = *vm
	model.Datastore = *ds
	model.Portgroup = *pg
	model.Autostart = *autostart

	if err := model.Create(); err != nil {
		fmt.Fprintf(os.Stderr, "vcsim: creating the inventory failed: %v\n", err)
		os.Exit(1)
	}
	defer model.Remove()

	// govmomi 0.24 assigns a fresh instance UUID to a copy of the service content, so every simulator
	// reports the same one; real vCenters differ, and the ZVM tells sites apart by it.
	si := simulator.Map.Get(vim25.ServiceInstance).(*simulator.ServiceInstance)
	si.Content.About.InstanceUuid = newUUID()

	em := &ExtensionManager{}
	em.Self = types.ManagedObjectReference{Type: "ExtensionManager", Value: "ExtensionManager"}
	simulator.Map.Put(em)

	if err := sizeDisks(*diskMB); err != nil {
		fmt.Fprintf(os.Stderr, "vcsim: preparing disk files failed: %v\n", err)
		os.Exit(1)
	}

	u := &url.URL{Host: *listen}
	if *password != "" {
		u.User = url.UserPassword(*username, *password)
	}
	model.Service.Listen = u
	if *useTLS {
		model.Service.TLS = new(tls.Config)
		if *tlsCert != "" {
			pair, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
			if err != nil {
				fmt.Fprintf(os.Stderr, "vcsim: cannot load -tls-cert/-tls-key: %v\n", err)
				os.Exit(2)
			}
			model.Service.TLS.Certificates = []tls.Certificate{pair}
		}
	}
	server := model.Service.NewServer()
	defer server.Close()

	out := server.URL
	shown := *out
	shown.User = nil
	line, _ := json.Marshal(map[string]interface{}{
		"url":        shown.String(),
		"datastores": datastoreDirs(),
		"pid":        os.Getpid(),
	})
	fmt.Println(string(line))
	os.Stdout.Sync()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
}
