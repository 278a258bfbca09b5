import { describe, expect, it } from "vitest";
import {
  formatStep,
  goSliceToJson,
  historySteps,
  parseCreatedBy,
  renderDockerfile,
} from "../../ui/src/lib/history.ts";

const line = (createdBy: string) => formatStep(parseCreatedBy(createdBy));

describe("Dockerfile steps from image history", () => {
  it("reads the classic builder's metadata steps", () => {
    expect(line('/bin/sh -c #(nop)  CMD ["/bin/sh"]')).toBe('CMD ["/bin/sh"]');
    expect(line("/bin/sh -c #(nop) ADD file:5b1d2c7e0a8f in / ")).toBe("ADD file:5b1d2c7e0a8f in /");
    expect(line("/bin/sh -c #(nop) WORKDIR /app")).toBe("WORKDIR /app");
    expect(line("/bin/sh -c #(nop)  ENV PATH=/usr/local/bin:/usr/bin")).toBe(
      "ENV PATH=/usr/local/bin:/usr/bin",
    );
    expect(line("/bin/sh -c #(nop)  EXPOSE 80")).toBe("EXPOSE 80");
    expect(line('/bin/sh -c #(nop)  LABEL maintainer="NGINX <docker-maint@nginx.com>"')).toBe(
      'LABEL maintainer="NGINX <docker-maint@nginx.com>"',
    );
    expect(line("/bin/sh -c #(nop) COPY dir:0a1b2c in /usr/src/app ")).toBe(
      "COPY dir:0a1b2c in /usr/src/app",
    );
    expect(line("/bin/sh -c #(nop)  STOPSIGNAL SIGQUIT")).toBe("STOPSIGNAL SIGQUIT");
  });

  it("reads the classic builder's RUN steps, with and without build arguments", () => {
    expect(line("/bin/sh -c apt-get update && apt-get install -y curl")).toEqual(
      "RUN apt-get update && apt-get install -y curl",
    );
    const withArgs = parseCreatedBy("|2 VERSION=1.2.3 TARGETARCH=amd64 /bin/sh -c make install");
    expect(withArgs).toEqual({
      instruction: "RUN",
      args: "make install",
      buildArgs: "VERSION=1.2.3 TARGETARCH=amd64",
    });
  });

  it("reads BuildKit's steps", () => {
    expect(line("RUN /bin/sh -c apk add --no-cache curl # buildkit")).toBe("RUN apk add --no-cache curl");
    expect(parseCreatedBy("RUN |1 NODE_VERSION=20 /bin/sh -c npm ci # buildkit")).toEqual({
      instruction: "RUN",
      args: "npm ci",
      buildArgs: "NODE_VERSION=20",
    });
    expect(line("COPY . . # buildkit")).toBe("COPY . .");
    expect(line("COPY --from=build /out/app /usr/local/bin/app # buildkit")).toBe(
      "COPY --from=build /out/app /usr/local/bin/app",
    );
    expect(line("WORKDIR /app")).toBe("WORKDIR /app");
    expect(line("ENV NODE_ENV=production")).toBe("ENV NODE_ENV=production");
    expect(line("EXPOSE map[8080/tcp:{} 9090/tcp:{}]")).toBe("EXPOSE 8080/tcp 9090/tcp");
    expect(line('CMD ["node" "server.js"]')).toBe('CMD ["node", "server.js"]');
    expect(line('ENTRYPOINT ["/docker-entrypoint.sh"]')).toBe('ENTRYPOINT ["/docker-entrypoint.sh"]');
    expect(line("VOLUME [/data /cache]")).toBe("VOLUME /data /cache");
    expect(line("USER 65532:65532")).toBe("USER 65532:65532");
    expect(line("ARG TARGETPLATFORM")).toBe("ARG TARGETPLATFORM");
  });

  it("keeps JSON arrays and odd text as they are", () => {
    expect(goSliceToJson('["a", "b"]')).toBe('["a", "b"]');
    expect(goSliceToJson("[]")).toBe("[]");
    expect(goSliceToJson('["a" "with \\"quote\\""]')).toBe('["a", "with \\"quote\\""]');
    expect(goSliceToJson("[not quoted]")).toBe("[not quoted]");
    expect(goSliceToJson("plain")).toBe("plain");
  });

  it("reads Windows images", () => {
    expect(line("cmd /S /C mkdir C:\\app")).toBe("RUN mkdir C:\\app");
    expect(line("cmd /S /C #(nop) WORKDIR C:\\app")).toBe("WORKDIR C:\\app");
    expect(line("powershell -Command Install-Module Foo")).toBe("RUN powershell -Command Install-Module Foo");
  });

  it("keeps other builders' text as a comment", () => {
    expect(line("ko")).toBe("# ko");
    expect(line("jib-maven-plugin:3.4.0")).toBe("# jib-maven-plugin:3.4.0");
    expect(line("bazel build //app:image")).toBe("# bazel build //app:image");
    expect(line("")).toBe("# (no command recorded)");
  });

  it("matches steps that made a layer to the manifest's layers", () => {
    const history = [
      { created_by: "/bin/sh -c #(nop) ADD file:abc in / " },
      { created_by: '/bin/sh -c #(nop)  CMD ["/bin/sh"]', empty_layer: true },
      { created_by: "WORKDIR /app", empty_layer: true },
      { created_by: "RUN /bin/sh -c npm ci # buildkit", created: "2024-05-01T12:00:00Z" },
      { created_by: "COPY . . # buildkit" },
      { created_by: 'CMD ["node" "server.js"]', empty_layer: true, comment: "buildkit.dockerfile.v0" },
    ];
    const steps = historySteps(history, 3);
    expect(steps.map((s) => s.layer)).toEqual([0, null, null, 1, 2, null]);
    expect(steps.map((s) => s.emptyLayer)).toEqual([false, true, true, false, false, true]);
    expect(steps[3]?.created).toBe("2024-05-01T12:00:00Z");
    expect(steps[5]?.comment).toBe("buildkit.dockerfile.v0");
    // When the counts disagree (squashed or hand-made images) no step claims a layer it may not own.
    expect(historySteps(history, 5).every((s) => s.layer === null)).toBe(true);
    expect(renderDockerfile(history)).toBe(
      [
        "ADD file:abc in /",
        'CMD ["/bin/sh"]',
        "WORKDIR /app",
        "RUN npm ci",
        "COPY . .",
        'CMD ["node", "server.js"]',
      ].join("\n"),
    );
  });

  it("shows a recorded comment when there is no command", () => {
    const [step] = historySteps([{ comment: "imported from tarball" }]);
    expect(formatStep(step!)).toBe("# imported from tarball");
    expect(historySteps(undefined)).toEqual([]);
  });
});
