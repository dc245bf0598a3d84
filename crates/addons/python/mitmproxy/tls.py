"""mitmproxy.tls as far as `tls_clienthello` needs it: what the client's ClientHello
asked for, where the connection goes, and the script's decision to leave it alone."""


class ClientHello:
    """The parts of a ClientHello Periscope reads before it decides to intercept."""

    def __init__(self, sni, alpn_protocols):
        self.sni = sni
        self.alpn_protocols = [p.encode("latin-1") for p in alpn_protocols]

    def __repr__(self):
        return f"ClientHello(sni={self.sni!r}, alpn_protocols={self.alpn_protocols!r})"


class _Connection:
    def __init__(self, address):
        self.peername = tuple(address) if address else None
        self.address = self.peername
        self.sni = None


class _Context:
    def __init__(self, client, server, sni):
        self.client = _Connection(client)
        self.client.sni = sni
        self.server = _Connection(server)


class ClientHelloData:
    """`data` of `tls_clienthello(data)`. Set `ignore_connection = True` to have the
    connection passed through untouched (the client sees the server's certificate),
    as `--ignore-hosts` does. `establish_server_tls_first` is accepted and has no
    effect: Periscope always speaks to the server before it answers the client."""

    def __init__(self, message):
        self.context = _Context(message.get("client"), message.get("server"), message.get("sni"))
        self.client_hello = ClientHello(message.get("sni"), message.get("alpn_protocols") or [])
        self.ignore_connection = False
        self.establish_server_tls_first = False
