"""Where requests go: the regional endpoint map of the official SDK, and the plain-HTTP rule.

`https://dysmsapi.ap-southeast-1.aliyuncs.com` is the default, as for international accounts. Plain `http://`
is accepted only for loopback hosts (the emulator); anything else would send signed requests in clear text.
"""

from __future__ import annotations

import ipaddress

import httpx

DEFAULT_REGION = "ap-southeast-1"

# From alibabacloud_dysmsapi20180501/client.py (`_endpoint_rule = 'central'`); unmapped regions use the
# central host.
REGION_HOSTS = {
    "ap-southeast-1": "dysmsapi.ap-southeast-1.aliyuncs.com",
    "ap-southeast-5": "dysmsapi.ap-southeast-5.aliyuncs.com",
    "cn-hongkong": "dysmsapi-xman.cn-hongkong.aliyuncs.com",
    "eu-central-1": "dysmsapi.eu-central-1.aliyuncs.com",
    "us-east-1": "dysmsapi.us-east-1.aliyuncs.com",
    "cn-beijing": "dysmsapi-proxy.cn-beijing.aliyuncs.com",
}
CENTRAL_HOST = "dysmsapi.aliyuncs.com"


class InsecureEndpoint(ValueError):
    """Plain HTTP to a host that is not loopback."""


def is_loopback(host: str) -> bool:
    """`localhost`, 127.0.0.0/8 and ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_endpoint(endpoint: str | None = None, region: str | None = None) -> httpx.URL:
    """The base URL for an explicit endpoint, or for a region's host.

    Args:
        endpoint: `https://host[:port]`, `http://127.0.0.1:port`, or a bare host (HTTPS is implied).
        region: used when no endpoint is given; unmapped regions use the central host, as the SDK does.

    Raises:
        InsecureEndpoint: `http://` to a non-loopback host.
    """
    if not endpoint:
        host = REGION_HOSTS.get(region or DEFAULT_REGION, CENTRAL_HOST)
        return httpx.URL(f"https://{host}/")
    url = httpx.URL(endpoint if "://" in endpoint else f"https://{endpoint}")
    if url.scheme not in ("http", "https"):
        raise ValueError(f"endpoint scheme must be https (or http for loopback), got {url.scheme!r}")
    if url.scheme == "http" and not is_loopback(url.host):
        raise InsecureEndpoint(
            f"refusing plain http:// to {url.host}: signed requests must use https "
            "(http is allowed for loopback only)"
        )
    return url.copy_with(path="/", query=None)
