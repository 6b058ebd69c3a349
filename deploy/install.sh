#!/usr/bin/env bash
# Install Tradebaas on a Debian/Ubuntu server (run as root from a checkout of the repository):
#   sudo deploy/install.sh [--domain trade.example.com] [--no-nginx] [--no-firewall]
# Creates the `tradebaas` user, copies the code to /opt/tradebaas/app, builds the virtualenv
# /opt/tradebaas/venv, writes /etc/tradebaas/tradebaas.env (once; never overwritten), installs the
# systemd units, runs migrations and collectstatic, and starts tradebaas.target and the backup timer.
# Safe to run again for an upgrade (it keeps the env file and the data).
set -euo pipefail

DOMAIN=""
WITH_NGINX=1
WITH_FIREWALL=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --domain) DOMAIN="$2"; shift 2 ;;
    --no-nginx) WITH_NGINX=0; shift ;;
    --no-firewall) WITH_FIREWALL=0; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

[[ $EUID -eq 0 ]] || { echo "run as root" >&2; exit 1; }
SRC="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX=/opt/tradebaas
ENV_FILE=/etc/tradebaas/tradebaas.env
PYTHON="${PYTHON:-python3.11}"

echo "== packages"
apt-get update -q
apt-get install -y -q "$PYTHON" "$PYTHON-venv" postgresql redis-server rsync curl ca-certificates
[[ $WITH_NGINX -eq 1 ]] && apt-get install -y -q nginx certbot python3-certbot-nginx
[[ $WITH_FIREWALL -eq 1 ]] && apt-get install -y -q ufw

echo "== user and directories"
id tradebaas >/dev/null 2>&1 || useradd --system --home-dir "$PREFIX" --shell /usr/sbin/nologin tradebaas
install -d -o tradebaas -g tradebaas -m 0750 "$PREFIX" /var/lib/tradebaas /var/backups/tradebaas
install -d -o root -g tradebaas -m 0750 /etc/tradebaas

echo "== code"
rsync -a --delete --exclude .git --exclude .venv --exclude data --exclude node_modules \
  --exclude artifacts --exclude staticfiles "$SRC/" "$PREFIX/app/"
chown -R root:tradebaas "$PREFIX/app"
chmod -R g+rX,o-rwx "$PREFIX/app"

echo "== virtualenv"
[[ -x "$PREFIX/venv/bin/python" ]] || "$PYTHON" -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install -q --upgrade pip
"$PREFIX/venv/bin/pip" install -q -r "$PREFIX/app/requirements/base.txt"

echo "== database and redis"
bash "$SRC/deploy/postgres/setup.sh"
bash "$SRC/deploy/redis/setup.sh"

echo "== environment ($ENV_FILE)"
if [[ ! -f "$ENV_FILE" ]]; then
  secret_key="$("$PREFIX/venv/bin/python" -c 'import secrets; print(secrets.token_urlsafe(64))')"
  fernet="$("$PREFIX/venv/bin/python" -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
  db_password="$(cat /etc/tradebaas/db_password)"
  host="${DOMAIN:-$(hostname -f)}"
  sed -e "s|@SECRET_KEY@|$secret_key|" -e "s|@CREDENTIALS_KEYS@|$fernet|" \
      -e "s|@DB_PASSWORD@|$db_password|" -e "s|@HOST@|$host|g" \
      "$SRC/deploy/tradebaas.env.example" >"$ENV_FILE"
  chown root:tradebaas "$ENV_FILE"
  chmod 0640 "$ENV_FILE"
  echo "   written; review it (Sentry, Telegram, CORS) before trading"
fi

echo "== migrate, static files, operator"
run_manage() { sudo -u tradebaas bash -c "set -a; . $ENV_FILE; set +a; cd $PREFIX/app && $PREFIX/venv/bin/python manage.py $*"; }
run_manage migrate --noinput
run_manage collectstatic --noinput -v 0
run_manage check --deploy --fail-level WARNING || echo "   (review the deploy check above)"

echo "== systemd units"
install -m 0644 "$SRC"/deploy/systemd/*.service "$SRC"/deploy/systemd/*.timer "$SRC"/deploy/systemd/tradebaas.target /etc/systemd/system/
systemctl daemon-reload
systemctl enable --now tradebaas.target tradebaas-backup.timer
systemctl enable tradebaas-web tradebaas-runner tradebaas-worker tradebaas-beat tradebaas-telegram
systemctl restart tradebaas.target

if [[ $WITH_NGINX -eq 1 ]]; then
  echo "== nginx"
  sed "s/trade.example.com/${DOMAIN:-_}/g" "$SRC/deploy/nginx/tradebaas.conf" >/etc/nginx/sites-available/tradebaas.conf
  ln -sf /etc/nginx/sites-available/tradebaas.conf /etc/nginx/sites-enabled/tradebaas.conf
  rm -f /etc/nginx/sites-enabled/default
  if [[ -n "$DOMAIN" && ! -d "/etc/letsencrypt/live/$DOMAIN" ]]; then
    echo "   get a certificate: certbot certonly --nginx -d $DOMAIN   (then: systemctl reload nginx)"
  fi
  nginx -t && systemctl reload nginx || echo "   nginx config not active yet (certificate missing?)"
fi

if [[ $WITH_FIREWALL -eq 1 ]]; then
  echo "== firewall"
  bash "$SRC/deploy/firewall.sh"
fi

echo "== status"
sleep 5
curl -fsS http://127.0.0.1:8000/healthz && echo
curl -sS http://127.0.0.1:8000/readyz && echo
echo "Create the operator: sudo -u tradebaas bash -c 'set -a; . $ENV_FILE; cd $PREFIX/app && $PREFIX/venv/bin/python manage.py createsuperuser'"
