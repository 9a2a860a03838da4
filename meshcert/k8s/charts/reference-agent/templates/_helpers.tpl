{{/* Names and labels. */}}
{{- define "reference-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "reference-agent.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "reference-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "reference-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "reference-agent.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "reference-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* "true" when the Tailscale sidecar is rendered: enabled, and the type is not direct. */}}
{{- define "reference-agent.sidecar" -}}
{{- $c := .Values.connectivity | default dict -}}
{{- if and $c.enabled (ne (toString ($c.type | default "")) "direct") -}}true{{- end -}}
{{- end -}}

{{/* Checks of the connectivity values that a schema cannot express. */}}
{{- define "reference-agent.validate" -}}
{{- $c := .Values.connectivity -}}
{{- if include "reference-agent.sidecar" . -}}
{{- if not $c.authKeySecret -}}
{{- fail "connectivity.authKeySecret: required when connectivity.enabled is true (the Secret holding the pre-auth key)" -}}
{{- end -}}
{{- if not $c.authKeySecretKey -}}
{{- fail "connectivity.authKeySecretKey: required when connectivity.enabled is true (the key inside the Secret)" -}}
{{- end -}}
{{- if and (eq (toString $c.type) "headscale") (not $c.controlServer) -}}
{{- fail "connectivity.controlServer: required for type headscale (the headscale server's URL)" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* image reference: repository[:tag] (a tag of "" leaves the repository as it is). */}}
{{- define "reference-agent.image" -}}
{{- if .tag -}}{{ printf "%s:%s" .repository (toString .tag) }}{{- else -}}{{ .repository }}{{- end -}}
{{- end -}}

{{- define "reference-agent.socketDir" -}}/var/run/tailscale{{- end -}}
{{- define "reference-agent.socket" -}}/var/run/tailscale/tailscaled.sock{{- end -}}
{{- define "reference-agent.authDir" -}}/var/run/secrets/tailscale{{- end -}}

{{/*
The sidecar's entry script (POSIX sh; the `tailscale up` flags arrive as "$@" from args):
start tailscaled, wait for its LocalAPI socket, log in once with the key read from
TS_AUTHKEY through stdin (never on a command line), then stay with the daemon.
*/}}
{{- define "reference-agent.sidecarScript" -}}
set -eu
if [ "$TS_TUN" != "userspace-networking" ] && [ ! -c /dev/net/tun ]; then
  mkdir -p /dev/net && mknod /dev/net/tun c 10 200
fi
mkdir -p "$TS_STATE_DIR"
# TS_TAILSCALED_EXTRA_ARGS is split into its flags on purpose.
tailscaled --statedir="$TS_STATE_DIR" --socket="$TS_SOCKET" --port="$TS_PORT" --tun="$TS_TUN" ${TS_TAILSCALED_EXTRA_ARGS:-} &
daemon=$!
trap 'kill -TERM "$daemon" 2>/dev/null; wait "$daemon"; exit 0' TERM INT
while [ ! -S "$TS_SOCKET" ]; do
  if ! kill -0 "$daemon" 2>/dev/null; then
    echo "tailscale-sidecar: tailscaled exited before its socket appeared" >&2
    wait "$daemon" || exit $?
    exit 1
  fi
  sleep 0.2
done
if ! printf '%s' "$TS_AUTHKEY" | tailscale --socket="$TS_SOCKET" up --reset --auth-key=file:/dev/stdin "$@"; then
  echo "tailscale-sidecar: tailscale up failed" >&2
  kill -TERM "$daemon" 2>/dev/null || true
  wait "$daemon" || true
  exit 1
fi
unset TS_AUTHKEY
echo "tailscale-sidecar: logged in; staying with tailscaled (pid $daemon)"
wait "$daemon"
{{- end -}}

{{/* The ServiceAccount the pod runs as ("" = the namespace's default: no serviceAccountName). */}}
{{- define "reference-agent.serviceAccountName" -}}
{{- $sa := .Values.serviceAccount | default dict -}}
{{- if $sa.create -}}{{ default (include "reference-agent.fullname" .) $sa.name }}{{- else -}}{{ $sa.name | default "" }}{{- end -}}
{{- end -}}

{{/* "true" when the run lifecycle's Vault settings are rendered (vault.address set). */}}
{{- define "reference-agent.vault" -}}
{{- $v := .Values.vault | default dict -}}
{{- if $v.address -}}true{{- end -}}
{{- end -}}

{{/* Checks of the vault values that a schema cannot express. */}}
{{- define "reference-agent.validateVault" -}}
{{- $v := .Values.vault | default dict -}}
{{- if $v.address -}}
{{- if and (eq (toString $v.auth) "kubernetes") (not $v.kubernetesRole) -}}
{{- fail "vault.kubernetesRole: required when vault.auth is kubernetes (the Vault role the pod logs in as)" -}}
{{- end -}}
{{- if and (eq (toString $v.auth) "approle") (not $v.approleSecret) -}}
{{- fail "vault.approleSecret: required when vault.auth is approle (the Secret holding role-id and secret-id)" -}}
{{- end -}}
{{- if and (eq (toString $v.auth) "kubernetes") (not (.Values.serviceAccount | default dict).automountToken) -}}
{{- fail "serviceAccount.automountToken: must be true when vault.auth is kubernetes (the pod logs in with its service-account token)" -}}
{{- end -}}
{{- end -}}
{{- end -}}
