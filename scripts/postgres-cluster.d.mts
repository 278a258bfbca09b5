export declare const PG_USER: string;
export declare function postgresOwner(): { uid: number; gid: number } | null;
export declare function pgCommand(binDir: string, binary: string, args: string[]): [string, string[]];
export declare function initdbArgs(data: string): string[];
export declare function serverArgs(
  data: string,
  port: number,
  socketDir: string,
  settings: Record<string, string | number>,
): string[];
