//! Tests of the test harness itself, against the real peers and without the proxy: they
//! prove each peer behaves as the proxy tests assume before those tests depend on it.
//! Every test is independent (own ports, own temp dirs), so nextest runs them in
//! parallel. All names start with `harness::` (`scripts/test.sh harness` runs them).

mod support;

mod harness {
    pub(crate) use super::support;

    mod tools {
        use super::support::*;
        use std::process::Command;

        #[test]
        fn free_port_can_be_bound_again() {
            let port = free_port();
            assert_ne!(port, 0);
            std::net::TcpListener::bind(("127.0.0.1", port)).expect("port is free");
        }

        #[test]
        fn every_required_tool_is_installed() {
            for tool in [
                "apache2",
                "curl",
                "openssl",
                "tshark",
                "tmux",
                "jq",
                "gnutls-serv",
            ] {
                let path = require_tool(tool);
                assert!(path.is_absolute(), "{tool}: {}", path.display());
            }
            let out = Command::new(require_tool("apache2"))
                .arg("-v")
                .output()
                .unwrap();
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("Apache/2.4"),
                "{out:?}"
            );
            for module in [
                "mod_ssl.so",
                "mod_reflector.so",
                "mod_rewrite.so",
                "mod_headers.so",
            ] {
                let path = std::path::Path::new("/usr/lib/apache2/modules").join(module);
                assert!(path.exists(), "{} missing", path.display());
            }
        }

        #[test]
        #[should_panic(expected = "scripts/test.sh")]
        fn require_tool_panics_with_an_install_hint() {
            require_tool("periscope-no-such-tool");
        }

        #[test]
        fn test_python_imports_the_required_packages() {
            let out = Command::new(python())
                .args([
                    "-c",
                    "import OpenSSL, websockets, jsonschema, requests; print('ok', OpenSSL.__version__)",
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("ok "),
                "{out:?}"
            );
        }

        #[test]
        fn big_bin_is_5_mib_of_fixed_bytes() {
            assert_eq!(big_bin().len(), 5 * 1024 * 1024);
            assert_eq!(big_bin_sha256(), sha256_hex(big_bin()));
            // Fixed seed: the same file in every run and on every machine.
            assert_eq!(
                big_bin_sha256(),
                "3fb96ef67361dd3a5505759dbf94a4ac66197fbf2381d40e302b6cb4fdd62716"
            );
        }

        #[test]
        fn listening_line_parsing_accepts_ipv4_and_ipv6() {
            assert_eq!(
                parse_listening_port("periscope: proxy listening at 127.0.0.1:41234"),
                Some(41234)
            );
            assert_eq!(
                parse_listening_port("INFO proxy listening at [::1]:8080 (regular)"),
                Some(8080)
            );
            assert_eq!(parse_listening_port("proxy listening at nowhere"), None);
        }
    }

    mod pki {
        use super::support::*;
        use openssl::stack::Stack;
        use openssl::x509::store::X509StoreBuilder;
        use openssl::x509::{X509StoreContext, X509VerifyResult, X509};

        fn verify(cert: &X509, ca: &X509) -> X509VerifyResult {
            let mut store = X509StoreBuilder::new().unwrap();
            store.add_cert(ca.clone()).unwrap();
            let store = store.build();
            let chain = Stack::new().unwrap();
            let mut ctx = X509StoreContext::new().unwrap();
            ctx.init(&store, cert, &chain, |c| {
                c.verify_cert()?;
                Ok(c.error())
            })
            .unwrap()
        }

        fn cn(cert: &X509) -> String {
            cert.subject_name()
                .entries_by_nid(openssl::nid::Nid::COMMONNAME)
                .next()
                .unwrap()
                .data()
                .to_string()
                .unwrap()
        }

        fn check_set(pki: &TestPki) {
            let ca = TestPki::load_cert(&pki.ca_cert);
            let client_ca = TestPki::load_cert(&pki.client_ca_cert);
            assert_eq!(cn(&ca), "Periscope Test Root");
            assert_eq!(cn(&client_ca), "Periscope Test Client CA");

            let server = TestPki::load_cert(&pki.server_cert);
            assert_eq!(cn(&server), "localhost");
            assert_eq!(verify(&server, &ca), X509VerifyResult::OK);
            let sans = server.subject_alt_names().expect("server SAN");
            let dns: Vec<_> = sans.iter().filter_map(|n| n.dnsname()).collect();
            let ips: Vec<_> = sans.iter().filter_map(|n| n.ipaddress()).collect();
            assert_eq!(dns, ["localhost"]);
            assert!(ips.contains(&&[127u8, 0, 0, 1][..]), "{ips:?}");
            assert!(
                ips.contains(&&std::net::Ipv6Addr::LOCALHOST.octets()[..]),
                "{ips:?}"
            );

            let client = TestPki::load_cert(&pki.client_cert);
            assert_eq!(cn(&client), "periscope-test-client");
            assert_eq!(verify(&client, &client_ca), X509VerifyResult::OK);
            assert_ne!(verify(&client, &ca), X509VerifyResult::OK);
            let combined = std::fs::read_to_string(&pki.client_pem).unwrap();
            assert!(combined.contains("-----BEGIN CERTIFICATE-----"));
            assert!(combined.contains("-----BEGIN PRIVATE KEY-----"));
            assert_eq!(
                X509::from_pem(combined.as_bytes())
                    .unwrap()
                    .to_der()
                    .unwrap(),
                client.to_der().unwrap()
            );

            let untrusted = TestPki::load_cert(&pki.untrusted_cert);
            assert_eq!(cn(&untrusted), "localhost");
            assert_ne!(verify(&untrusted, &ca), X509VerifyResult::OK);

            let expired = TestPki::load_cert(&pki.expired_cert);
            assert_eq!(
                verify(&expired, &ca).as_raw(),
                openssl_sys::X509_V_ERR_CERT_HAS_EXPIRED
            );

            for key in [
                &pki.ca_key,
                &pki.server_key,
                &pki.client_ca_key,
                &pki.client_key,
                &pki.untrusted_key,
                &pki.expired_key,
            ] {
                let pem = std::fs::read(key).unwrap();
                openssl::pkey::PKey::private_key_from_pem(&pem)
                    .unwrap_or_else(|e| panic!("{}: {e}", key.display()));
            }
        }

        #[test]
        fn shared_pki_has_every_file_and_the_chains_verify() {
            check_set(test_pki());
            // Same set on the second call.
            assert_eq!(test_pki().dir, test_pki().dir);
        }

        #[test]
        fn generate_writes_a_fresh_set_into_a_given_dir() {
            let dir = tempfile::tempdir().unwrap();
            let pki = TestPki::generate(dir.path());
            assert_eq!(pki.dir, dir.path());
            check_set(&pki);
            assert_ne!(
                std::fs::read(&pki.ca_cert).unwrap(),
                std::fs::read(&test_pki().ca_cert).unwrap()
            );
        }
    }

    mod apache {
        use super::support::*;
        use std::time::{Duration, Instant};

        fn curl() -> Curl {
            Curl::new().cacert(&test_pki().ca_cert)
        }

        #[test]
        fn serves_hello_and_the_big_file_on_every_vhost() {
            let apache = Apache::start();
            for vhost in [Vhost::Plain, Vhost::Tls12, Vhost::Tls13] {
                for path in ["/", "/hello.txt"] {
                    let r = curl().run(&apache.url(vhost, path));
                    r.assert_status(200);
                    assert_eq!(r.body_text(), HELLO_BODY, "{vhost:?} {path}");
                }
                let r = curl().run(&apache.url(vhost, "/big.bin"));
                r.assert_status(200);
                assert_eq!(r.body.len(), big_bin().len());
                assert_eq!(sha256_hex(&r.body), big_bin_sha256(), "{vhost:?}");
            }
            let r = curl().run(&apache.url(Vhost::Tls12, "/"));
            assert_eq!(r.header("X-TLS-Protocol"), Some("TLSv1.2"));
            assert_eq!(r.header("X-TLS-Cipher"), Some(INITIAL_TLS12_CIPHER));
            assert_eq!(r.header("X-Client-Verify"), Some("NONE"));
            let r = curl().run(&apache.url(Vhost::Tls13, "/"));
            assert_eq!(r.header("X-TLS-Protocol"), Some("TLSv1.3"));
            // 127.0.0.1 is in the certificate too.
            curl()
                .run(&apache.url_ip(Vhost::Tls13, "/hello.txt"))
                .assert_status(200);
            assert!(apache.access_log().contains("GET /big.bin"));
        }

        #[test]
        fn tls12_vhost_refuses_tls13_only_clients_and_tls13_vhost_speaks_both() {
            let apache = Apache::start();
            let r = curl().tlsv1_3().run(&apache.url(Vhost::Tls12, "/"));
            assert_eq!(r.exit_code, 35, "{r:?}");
            let r = curl().tlsv1_2().run(&apache.url(Vhost::Tls13, "/"));
            r.assert_status(200);
            assert_eq!(r.header("X-TLS-Protocol"), Some("TLSv1.2"));
            let r = curl().tlsv1_3().run(&apache.url(Vhost::Tls13, "/"));
            r.assert_status(200);
            assert_eq!(r.header("X-TLS-Protocol"), Some("TLSv1.3"));
        }

        #[test]
        fn echo_reflects_the_post_body_and_vedauth_echo_keeps_it_across_renegotiation() {
            let apache = Apache::start();
            let body: Vec<u8> = big_bin()[..300 * 1024].to_vec();
            for vhost in [Vhost::Plain, Vhost::Tls13] {
                let r = curl()
                    .header("Content-Type: application/octet-stream")
                    .data(&body)
                    .run(&apache.url(vhost, "/echo"));
                r.assert_status(200);
                assert!(r.body == body, "{vhost:?}: echo differs: {r:?}");
            }
            // 300 KiB (> the 128 KiB default SSLRenegBufferSize) survives the
            // renegotiation, and the certificate presented during it is seen.
            for vhost in [Vhost::Tls12, Vhost::Tls13] {
                let r = curl()
                    .cert(&test_pki().client_pem)
                    .data(&body)
                    .run(&apache.url(vhost, "/vedauth/echo"));
                r.assert_status(200);
                assert!(r.body == body, "{vhost:?}: echo differs: {r:?}");
                assert_eq!(r.header("X-Client-Cert-CN"), Some(CLIENT_CN));
            }
            assert_eq!(apache.renegotiation_count(), 1, "{}", apache.logs());
            assert_eq!(apache.post_handshake_auth_count(), 1, "{}", apache.logs());
        }

        #[test]
        fn vedauth_renegotiates_on_tls12_and_reports_the_client_cert() {
            let apache = Apache::start();
            let url = apache.url(Vhost::Tls12, "/vedauth/ok.txt");
            let r = curl().run(&url);
            r.assert_status(200);
            assert_eq!(r.body_text(), VEDAUTH_BODY);
            assert_eq!(r.header("X-Client-Verify"), Some("NONE"));
            assert_eq!(r.header("X-Client-Cert-CN"), Some("(null)"));
            assert!(r.time_total < 5.0, "{r:?}");

            let r = curl().cert(&test_pki().client_pem).run(&url);
            r.assert_status(200);
            assert_eq!(r.body_text(), VEDAUTH_BODY);
            assert_eq!(r.header("X-Client-Verify"), Some("SUCCESS"));
            assert_eq!(r.header("X-Client-Cert-CN"), Some(CLIENT_CN));
            assert_eq!(r.header("X-TLS-Protocol"), Some("TLSv1.2"));

            let r = curl()
                .cert(&test_pki().client_pem)
                .run(&apache.url(Vhost::Tls12, "/vedauth/"));
            r.assert_status(200);
            assert_eq!(r.body_text(), VEDAUTH_BODY);

            assert_eq!(apache.renegotiation_count(), 3, "{}", apache.logs());
            assert_eq!(apache.post_handshake_auth_count(), 0);
            apache.wait_for_access_log(
                &format!("cn={CLIENT_CN} verify=SUCCESS"),
                Duration::from_secs(5),
            );
        }

        #[test]
        fn vedauth_uses_post_handshake_auth_on_tls13() {
            let apache = Apache::start();
            let url = apache.url(Vhost::Tls13, "/vedauth/ok.txt");
            let r = curl().run(&url);
            r.assert_status(200);
            assert_eq!(r.header("X-Client-Verify"), Some("NONE"));
            assert_eq!(r.header("X-TLS-Protocol"), Some("TLSv1.3"));
            let r = curl().cert(&test_pki().client_pem).run(&url);
            r.assert_status(200);
            assert_eq!(r.body_text(), VEDAUTH_BODY);
            assert_eq!(r.header("X-Client-Verify"), Some("SUCCESS"));
            assert_eq!(r.header("X-Client-Cert-CN"), Some(CLIENT_CN));
            assert_eq!(apache.post_handshake_auth_count(), 2, "{}", apache.logs());
            assert_eq!(apache.renegotiation_count(), 0);
        }

        #[test]
        fn vedauth_on_tls13_without_post_handshake_auth_is_forbidden_at_once() {
            let apache = Apache::start();
            let mut client = TlsClient::builder()
                .tls13()
                .post_handshake_auth(false)
                .connect(&format!("127.0.0.1:{}", apache.tls13_port));
            let started = Instant::now();
            let r = client.get("/vedauth/ok.txt");
            assert_eq!(r.status, 403, "{r:?}");
            assert!(started.elapsed() < Duration::from_secs(5));
            // Locations without client auth are fine without PHA.
            let mut client = TlsClient::builder()
                .tls13()
                .post_handshake_auth(false)
                .connect(&format!("127.0.0.1:{}", apache.tls13_port));
            assert_eq!(client.get("/hello.txt").status, 200);
        }

        #[test]
        fn oauth_answers_400_with_json_after_the_renegotiation() {
            let apache = Apache::start();
            for vhost in [Vhost::Tls12, Vhost::Tls13] {
                for with_cert in [false, true] {
                    for post in [false, true] {
                        let mut c = curl();
                        if with_cert {
                            c = c.cert(&test_pki().client_pem);
                        }
                        if post {
                            c = c
                                .header("Content-Type: application/x-www-form-urlencoded")
                                .data("grant_type=client_credentials&client_id=periscope");
                        }
                        let what = format!("{vhost:?} cert={with_cert} post={post}");
                        let r = c.run(&apache.url(vhost, "/vedauth/authorize/oauth"));
                        assert_eq!((r.exit_code, r.status), (0, 400), "{what}: {r:?}");
                        assert_eq!(
                            r.header("Content-Type"),
                            Some("application/json"),
                            "{what}: {r:?}"
                        );
                        assert_eq!(r.json()["error"], "invalid_request", "{what}");
                        assert_eq!(r.body_text(), OAUTH400_JSON);
                        // The client certificate shows: the 400 came after the
                        // renegotiation / post-handshake auth.
                        let expected_cn = if with_cert { CLIENT_CN } else { "(null)" };
                        assert_eq!(r.header("X-Client-Cert-CN"), Some(expected_cn), "{what}");
                        assert!(r.time_total < 5.0, "{what}: {r:?}");
                    }
                }
            }
            assert_eq!(apache.renegotiation_count(), 4, "{}", apache.logs());
            assert_eq!(apache.post_handshake_auth_count(), 4, "{}", apache.logs());
            // Without TLS, the same location answers the same JSON.
            let r = curl().run(&apache.url(Vhost::Plain, "/vedauth/authorize/oauth"));
            assert_eq!(r.status, 400);
            assert_eq!(r.json()["error"], "invalid_request");
        }

        #[test]
        fn renegotiated_only_switches_to_its_cipher_on_tls12() {
            let apache = Apache::start();
            let r = curl().run(&apache.url(Vhost::Tls12, "/renegotiated-only/"));
            r.assert_status(200);
            assert_eq!(r.body_text(), RENEGOTIATED_ONLY_BODY);
            assert_eq!(r.header("X-TLS-Cipher"), Some(RENEGOTIATED_TLS12_CIPHER));
            assert!(r.time_total < 5.0, "{r:?}");
            let r = curl()
                .cert(&test_pki().client_pem)
                .run(&apache.url(Vhost::Tls12, "/renegotiated-only/ok.txt"));
            r.assert_status(200);
            assert_eq!(r.header("X-TLS-Cipher"), Some(RENEGOTIATED_TLS12_CIPHER));
            assert_eq!(r.header("X-Client-Cert-CN"), Some(CLIENT_CN));
            // The handshake itself picks the other cipher.
            let r = curl().run(&apache.url(Vhost::Tls12, "/"));
            assert_eq!(r.header("X-TLS-Cipher"), Some(INITIAL_TLS12_CIPHER));
            // A TLS 1.2 client on the 1.2+1.3 vhost: the same.
            let r = curl()
                .tlsv1_2()
                .run(&apache.url(Vhost::Tls13, "/renegotiated-only/"));
            r.assert_status(200);
            assert_eq!(r.header("X-TLS-Cipher"), Some(RENEGOTIATED_TLS12_CIPHER));
            // TLS 1.3 cannot change ciphers: PHA only, TLS 1.3 cipher kept.
            let r = curl().run(&apache.url(Vhost::Tls13, "/renegotiated-only/"));
            r.assert_status(200);
            assert_eq!(r.header("X-TLS-Protocol"), Some("TLSv1.3"));
            assert_eq!(apache.renegotiation_count(), 3, "{}", apache.logs());
        }

        /// A client that never answers the HelloRequest (what a proxy that does not
        /// flush OpenSSL's renegotiation output looks like to Apache).
        fn stalled_request(
            apache: &Apache,
            tls13: bool,
            path: &str,
        ) -> (HttpResponse, Duration, usize) {
            let mut builder = TlsClient::builder().client_cert(&test_pki().client_pem);
            let port = if tls13 {
                builder = builder.tls13();
                apache.tls13_port
            } else {
                builder = builder.tls12();
                apache.tls12_port
            };
            let mut client = builder.connect(&format!("127.0.0.1:{port}"));
            let started = Instant::now();
            let r = client.request("GET", path, b"", true);
            (r, started.elapsed(), client.dropped_bytes())
        }

        #[test]
        fn stalled_tls12_renegotiation_gives_403_on_renegotiated_only_and_require_but_200_on_vedauth(
        ) {
            let apache = Apache::builder().timeout_secs(2).start();
            let (r, elapsed, dropped) = stalled_request(&apache, false, "/renegotiated-only/");
            assert_eq!(r.status, 403, "{r:?}");
            assert!(
                dropped > 0,
                "the client never tried to answer the HelloRequest"
            );
            assert!(elapsed >= Duration::from_millis(1900), "{elapsed:?}");
            assert_eq!(r.header("X-TLS-Cipher"), Some(INITIAL_TLS12_CIPHER));

            let (r, elapsed, _) = stalled_request(&apache, false, "/require/");
            assert_eq!(r.status, 403, "{r:?}");
            assert!(elapsed >= Duration::from_millis(1900), "{elapsed:?}");

            // The quirk: after Timeout, the optional location is served anyway.
            let (r, elapsed, _) = stalled_request(&apache, false, "/vedauth/ok.txt");
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(r.body_text(), VEDAUTH_BODY);
            assert_eq!(r.header("X-Client-Verify"), Some("NONE"));
            assert!(elapsed >= Duration::from_millis(1900), "{elapsed:?}");
        }

        #[test]
        fn stalled_tls13_post_handshake_auth_gives_403_on_require_but_200_after_timeout_elsewhere()
        {
            let apache = Apache::builder().timeout_secs(2).start();
            let (r, elapsed, dropped) = stalled_request(&apache, true, "/require/");
            assert_eq!(r.status, 403, "{r:?}");
            assert!(
                dropped > 0,
                "the client never tried to answer the CertificateRequest"
            );
            assert!(elapsed >= Duration::from_millis(1900), "{elapsed:?}");
            for path in ["/vedauth/ok.txt", "/renegotiated-only/"] {
                let (r, elapsed, _) = stalled_request(&apache, true, path);
                assert_eq!(r.status, 200, "{path}: {r:?}");
                assert_eq!(r.header("X-Client-Verify"), Some("NONE"));
                assert!(
                    elapsed >= Duration::from_millis(1900),
                    "{path}: {elapsed:?}"
                );
            }
        }

        #[test]
        fn require_fails_without_a_client_cert_and_succeeds_with_one() {
            let apache = Apache::start();
            for vhost in [Vhost::Tls12, Vhost::Tls13] {
                let r = curl().run(&apache.url(vhost, "/require/"));
                assert_ne!(r.exit_code, 0, "{vhost:?}: {r:?}");
                assert_eq!(r.status, 0, "{vhost:?}: {r:?}");
                assert!(r.stderr.contains("alert"), "{vhost:?}: {r:?}");

                let r = curl()
                    .cert(&test_pki().client_pem)
                    .run(&apache.url(vhost, "/require/"));
                r.assert_status(200);
                assert_eq!(r.body_text(), REQUIRE_BODY);
                assert_eq!(r.header("X-Client-Cert-CN"), Some(CLIENT_CN));
                assert_eq!(r.header("X-Client-Verify"), Some("SUCCESS"));
            }
        }

        #[test]
        fn a_short_timeout_builder_option_is_written_to_the_config() {
            let apache = Apache::builder().timeout_secs(7).start();
            assert_eq!(apache.timeout_secs(), 7);
            let conf = std::fs::read_to_string(apache.dir().join("httpd.conf")).unwrap();
            assert!(conf.contains("\nTimeout 7\n"), "{conf}");
            assert_eq!(APACHE_TIMEOUT_SECS, 30);
            let default = Apache::start();
            let conf = std::fs::read_to_string(default.dir().join("httpd.conf")).unwrap();
            assert!(conf.contains("\nTimeout 30\n"));
            assert_ne!(apache.tls12_port, default.tls12_port);
        }
    }

    mod s_server {
        use super::support::*;
        use std::time::Duration;

        #[test]
        fn www_page_over_tls12_with_curl() {
            let server = OpensslServer::builder().tls1_2().www().start();
            let r = Curl::new()
                .cacert(&test_pki().ca_cert)
                .tlsv1_2()
                .run(&server.url("/"));
            r.assert_status(200);
            assert!(r.body_text().contains("s_server"), "{r:?}");
            assert!(r.body_text().contains("TLSv1.2"), "{r:?}");
            let r = Curl::new()
                .cacert(&test_pki().ca_cert)
                .tlsv1_3()
                .run(&server.url("/"));
            assert_ne!(r.exit_code, 0, "TLS 1.3 must be refused: {r:?}");
        }

        #[test]
        fn command_r_renegotiates_and_raw_data_flows_both_ways() {
            let mut server = OpensslServer::builder()
                .tls1_2()
                .no_ticket_no_cache()
                .start();
            let mut client = TlsClient::builder()
                .tls12()
                .client_cert(&test_pki().client_pem)
                .connect(&server.addr());
            server.wait_for_output("CIPHER is", Duration::from_secs(10));
            assert_eq!(client.handshake_count(), 1);

            // The answer comes once the HelloRequest is written; the client's reads then
            // drive the renegotiation (a second CLIENT_RANDOM in its key log).
            let answer = server.send_command("R");
            assert_eq!(answer, "SSL_do_handshake -> 1", "{}", server.describe());
            server.send_raw(b"during renegotiation\n");
            let data = client.pump_until(Duration::from_secs(10), |c, _| c.handshake_count() == 2);
            assert!(
                String::from_utf8_lossy(&data).contains("during renegotiation"),
                "{data:?}"
            );
            server.send_raw(b"after renegotiation\n");
            client.pump_until(Duration::from_secs(10), |_, data| {
                data.ends_with(b"after renegotiation\n")
            });
            assert_eq!(client.handshake_count(), 2, "{:?}", client.keylog_lines());

            client.write_all(b"ping from client\n").unwrap();
            server.wait_for_output("ping from client", Duration::from_secs(10));
        }

        #[test]
        fn tls13_key_update_and_post_handshake_auth_commands_keep_the_connection_alive() {
            let mut server = OpensslServer::builder().tls1_3().start();
            let mut client = TlsClient::builder()
                .tls13()
                .client_cert(&test_pki().client_pem)
                .connect(&server.addr());
            server.wait_for_output("CIPHER is TLS_", Duration::from_secs(10));
            for command in ["k", "K", "c"] {
                assert_eq!(server.send_command(command), "SSL_do_handshake -> 1");
            }
            server.send_raw(b"after key updates\n");
            let mut buf = [0u8; 256];
            let n = client.read(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"after key updates\n");
            // The server read the client's Certificate and KeyUpdate without error.
            client.write_all(b"pong\n").unwrap();
            server.wait_for_output("pong", Duration::from_secs(10));
            assert!(
                !server.stdout_lines().iter().any(|l| l == "ERROR"),
                "{}",
                server.describe()
            );
            assert_eq!(client.handshake_count(), 1);
        }
    }

    mod periscope_launcher {
        use super::support::*;
        use std::os::unix::fs::PermissionsExt;
        use std::time::Duration;

        fn fake(dir: &std::path::Path, script: &str) -> std::path::PathBuf {
            let path = dir.join("fake-periscope");
            std::fs::write(&path, format!("#!/bin/sh\n{script}")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path
        }

        #[test]
        fn parses_the_port_and_collects_stdout_and_stderr() {
            let dir = tempfile::tempdir().unwrap();
            let program = fake(
                dir.path(),
                r#"echo "args: $*"
echo "periscope: proxy listening at 127.0.0.1:45678" >&2
echo "keylog=$SSLKEYLOGFILE"
echo "second flow"
exec sleep 60
"#,
            );
            let mut proxy = PeriscopeBuilder::new()
                .program(&program)
                .env("SSLKEYLOGFILE", "/tmp/keys.log")
                .args(["--upstream-trusted-ca", "/x/ca.pem"])
                .start();
            assert_eq!(proxy.port(), 45678);
            assert_eq!(proxy.proxy_url(), "http://127.0.0.1:45678");
            let args = proxy.wait_for_stdout("args:", Duration::from_secs(10));
            assert_eq!(
                args,
                format!(
                    "args: dump --listen-host 127.0.0.1 -p 0 --confdir {} --upstream-trusted-ca /x/ca.pem",
                    proxy.confdir().display()
                )
            );
            assert!(proxy.confdir().is_dir());
            assert_eq!(
                proxy.ca_cert_path(),
                proxy.confdir().join("periscope-ca-cert.pem")
            );
            proxy.wait_for_stdout(
                |l: &str| l == "keylog=/tmp/keys.log",
                Duration::from_secs(10),
            );
            let mark = proxy.stdout().len();
            proxy.wait_for_stdout("second flow", Duration::from_secs(10));
            assert!(proxy.stderr_text().contains("proxy listening at"));
            let status = proxy
                .terminate(Duration::from_secs(5))
                .expect("exit status");
            assert!(!status.success());
            assert!(mark >= 2);
        }

        #[test]
        fn start_with_puts_the_fixed_options_before_the_subcommand() {
            let dir = tempfile::tempdir().unwrap();
            let program = fake(
                dir.path(),
                "echo \"args: $*\"\necho 'proxy listening at 127.0.0.1:1' >&2\nexec sleep 60\n",
            );
            let proxy = PeriscopeBuilder::new()
                .program(&program)
                .subcommand(None)
                .args(["web", "--web-port", "0"])
                .start();
            let args = proxy.wait_for_stdout("args:", Duration::from_secs(10));
            assert!(
                args.starts_with("args: --listen-host 127.0.0.1 -p 0 --confdir ")
                    && args.ends_with(" web --web-port 0"),
                "{args}"
            );
        }

        #[test]
        fn early_exit_panics_with_the_output_and_exit_status() {
            let dir = tempfile::tempdir().unwrap();
            let program = fake(
                dir.path(),
                "echo 'partial stdout'\necho 'error: unknown option --bogus' >&2\nexit 3\n",
            );
            let result = std::panic::catch_unwind(|| {
                PeriscopeBuilder::new()
                    .program(&program)
                    .arg("--bogus")
                    .start()
            });
            let message = match result {
                Ok(_) => panic!("start() must panic when the process exits early"),
                Err(payload) => payload
                    .downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_default(),
            };
            assert!(message.contains("unknown option --bogus"), "{message}");
            assert!(message.contains("partial stdout"), "{message}");
            assert!(message.contains("exit status: 3"), "{message}");
        }

        #[test]
        fn missing_listening_line_times_out_with_a_message() {
            let dir = tempfile::tempdir().unwrap();
            let program = fake(dir.path(), "echo 'starting' >&2\nexec sleep 60\n");
            let result = std::panic::catch_unwind(|| {
                PeriscopeBuilder::new()
                    .program(&program)
                    .ready_timeout(Duration::from_millis(300))
                    .start()
            });
            let message = match result {
                Ok(_) => panic!("start() must panic without the listening line"),
                Err(payload) => payload
                    .downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_default(),
            };
            assert!(message.contains("did not print"), "{message}");
            assert!(message.contains("starting"), "{message}");
        }
    }
}
