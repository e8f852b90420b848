// The Pod Security Standards' "restricted" profile (which includes "baseline"), checked on a
// pod spec the way the admission controller does: container settings override the pod's.
// Returns the violations; an empty list means the pod would be admitted in a namespace labelled
// pod-security.kubernetes.io/enforce: restricted.

const allowedVolumeTypes = new Set([
  "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
  "projected", "secret",
]);
const baselineCapabilities = new Set([
  "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
  "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
]);
const safeSysctls = new Set([
  "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
  "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
  "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
  "net.ipv4.tcp_keepalive_probes",
]);

export function restrictedViolations(podSpec) {
  const out = [];
  const pod = podSpec.securityContext ?? {};
  for (const field of ["hostNetwork", "hostPID", "hostIPC"]) {
    if (podSpec[field] === true) out.push(`pod: ${field} is true`);
  }
  if (pod.windowsOptions?.hostProcess === true) out.push("pod: hostProcess");
  for (const sysctl of pod.sysctls ?? []) {
    if (!safeSysctls.has(sysctl.name)) out.push(`pod: sysctl ${sysctl.name}`);
  }
  for (const volume of podSpec.volumes ?? []) {
    const types = Object.keys(volume).filter((k) => k !== "name");
    for (const type of types) {
      if (!allowedVolumeTypes.has(type)) out.push(`volume ${volume.name}: type ${type}`);
    }
  }
  const seLinuxOk = (o) =>
    o === undefined ||
    ((o.type === undefined || ["container_t", "container_init_t", "container_kvm_t"].includes(o.type)) &&
      o.user === undefined && o.role === undefined);
  if (!seLinuxOk(pod.seLinuxOptions)) out.push("pod: seLinuxOptions");
  const seccompOk = (p) => p?.type === "RuntimeDefault" || p?.type === "Localhost";
  if (pod.seccompProfile !== undefined && !seccompOk(pod.seccompProfile)) {
    out.push(`pod: seccompProfile ${pod.seccompProfile.type}`);
  }
  if (pod.runAsUser === 0) out.push("pod: runAsUser 0");
  const containers = [
    ...(podSpec.initContainers ?? []),
    ...(podSpec.containers ?? []),
    ...(podSpec.ephemeralContainers ?? []),
  ];
  for (const c of containers) {
    const sc = c.securityContext ?? {};
    const at = `container ${c.name}`;
    if (sc.privileged === true) out.push(`${at}: privileged`);
    if (sc.windowsOptions?.hostProcess === true) out.push(`${at}: hostProcess`);
    if (sc.procMount !== undefined && sc.procMount !== "Default") out.push(`${at}: procMount ${sc.procMount}`);
    if (!seLinuxOk(sc.seLinuxOptions)) out.push(`${at}: seLinuxOptions`);
    for (const port of c.ports ?? []) {
      if (port.hostPort !== undefined && port.hostPort !== 0) out.push(`${at}: hostPort ${port.hostPort}`);
    }
    if (sc.allowPrivilegeEscalation !== false) out.push(`${at}: allowPrivilegeEscalation is not false`);
    if ((sc.runAsNonRoot ?? pod.runAsNonRoot) !== true) out.push(`${at}: runAsNonRoot is not true`);
    if (sc.runAsUser === 0) out.push(`${at}: runAsUser 0`);
    const seccomp = sc.seccompProfile ?? pod.seccompProfile;
    if (!seccompOk(seccomp)) out.push(`${at}: seccompProfile is not RuntimeDefault or Localhost`);
    if (!(sc.capabilities?.drop ?? []).includes("ALL")) out.push(`${at}: capabilities do not drop ALL`);
    for (const cap of sc.capabilities?.add ?? []) {
      if (cap !== "NET_BIND_SERVICE") out.push(`${at}: adds capability ${cap}`);
      if (!baselineCapabilities.has(cap)) out.push(`${at}: adds non-baseline capability ${cap}`);
    }
  }
  return out;
}
